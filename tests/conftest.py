"""Shared fixtures: isolated environment, a runs root, one real ``mlflow server`` per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"  # screenshots and reports a test leaves for people

# DESIGN §3's per-task table, written out here so the tests hold the code to the contract.
DESIGN_TASKS: dict[str, tuple[str, str]] = {
    "classification": ("val_accuracy", "max"),
    "anomaly_detection": ("val_auroc", "max"),
    "object_detection": ("val_mAP", "max"),
    "oriented_object_detection": ("val_mAP", "max"),
    "segmentation": ("val_mIoU", "max"),
    "instance_segmentation": ("val_mAP_mask", "max"),
    "regression": ("val_mae", "min"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200 (or fail, with the process's output if it died)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def mlflow_server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    return env


class MlflowServer:
    """A real ``mlflow server`` process on 127.0.0.1 (SQLite store, proxied artifacts)."""

    def __init__(self, root: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.port = port or free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            *self.extra_args,
        ]

    def start(self, timeout: float = 90.0) -> "MlflowServer":
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            self.command(), env=mlflow_server_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_http(f"{self.url}/health", timeout=timeout, proc=self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{(self.root / 'server.log').read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (uvicorn and its workers), as a crash would."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's MLflow, token or runs root, or phones home."""
    for name in ("MLFLOW_TRACKING_URI", "TRACKBRIDGE_RUNS_ROOT", "TRACKBRIDGE_TOKEN", "MLFLOW_EXPERIMENT_NAME",
                 "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server for the whole test session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m trackbridge ARGS`` in a real subprocess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trackbridge", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
