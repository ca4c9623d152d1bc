"""``trackbridge demo``: train a few short runs and one to watch, register the best classifier, serve it all on one port.

The server starts first (``mlflow server --app-name trackbridge``: the MLflow
UI, MLflow's REST API and the trackbridge dashboard + live API on one port),
so the runs can be watched live while they train. The quick runs take seconds;
a paced classifier (:mod:`.demo_watch`) trains for a minute or two beside them,
in a child process, so there is always something moving to look at. The server
and that child run in process groups of their own: Ctrl-C reaches only this
process, which then stops them and waits for them, leaving no stray process
behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..mirror.uri import UI_URL_ENV, default_tracking_uri
from ..tasks import TASKS, is_better
from .demo_watch import WATCH_SEED, WATCH_TASK, WatchRun, demo_config, demo_trainer
from .errors import usage_error
from .options import resolve_runs_root, runs_root_option


@dataclass(frozen=True)
class DemoRun:
    task: str
    seed: int = 0


# Two classifiers (so the registry has a champion to pick) and two other tasks.
DEFAULT_PLAN = (
    DemoRun("classification", 0),
    DemoRun("classification", 1),
    DemoRun("regression", 0),
    DemoRun("segmentation", 0),
)
DASHBOARD_PREFIX = "/trackbridge/"
GRACEFUL_SHUTDOWN_S = 3
# The run to watch: about 2 s per epoch (20 batches of the digits classifier at 0.1 s each).
WATCH_EPOCHS = 40
WATCH_PACE_S = 0.1


class DemoServer:
    """``mlflow server --app-name trackbridge`` over the embedded store, in its own process group."""

    def __init__(
        self, host: str, port: int, tracking_uri: str, mlruns: Path, runs_root: Path, token: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.tracking_uri = tracking_uri
        self.mlruns = mlruns
        self.runs_root = runs_root
        self.token = token
        self.log_path = mlruns / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        # A server bound to every interface is still reached from here on loopback.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def mlflow_url(self) -> str:
        return self.base_url + "/"

    @property
    def dashboard_url(self) -> str:
        return self.page_url("")

    def page_url(self, page: str) -> str:
        """A dashboard page (``""``: the runs list, ``runs/<id>``), with the token when one is set."""
        query = f"?{urllib.parse.urlencode({'token': self.token})}" if self.token else ""
        return self.base_url + DASHBOARD_PREFIX + page + query

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--app-name", "trackbridge",
            "--backend-store-uri", self.tracking_uri,
            "--artifacts-destination", str(self.mlruns / "artifacts"),
            "--host", self.host, "--port", str(self.port),
            "--workers", "1",
            # uvicorn otherwise waits for every open live stream to end before it exits.
            "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_SHUTDOWN_S}",
        ]

    def start(self, timeout: float = 120.0) -> None:
        env = dict(os.environ)
        # The plugin falls back to MLFLOW_TRACKING_URI for runs it cannot read from disk;
        # the demo's runs are all here, and its store is the server's own.
        env.pop("MLFLOW_TRACKING_URI", None)
        env.update(
            # MLflow's job runner (extra processes) is not needed to browse runs.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            TRACKBRIDGE_RUNS_ROOT=str(self.runs_root),
        )
        self.mlruns.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise click.ClickException(
                    f"the server exited with code {self.proc.returncode} before answering; "
                    f"its log is {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _answers(self.base_url + "/health") and _answers(self.dashboard_url):
                return
            time.sleep(0.3)
        raise click.ClickException(f"the server did not answer within {timeout:.0f} s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group (server and workers), wait, SIGKILL what is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Workers can outlive the leader for a moment; none may outlive the demo.
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        self.proc = None


@click.command("demo")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port of the server (MLflow UI + dashboard).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 exposes the server to the network.")
@click.option("--epochs", type=click.IntRange(1, 100), default=4, show_default=True, help="Epochs per run.")
@click.option("--task", "tasks", multiple=True, type=click.Choice(list(TASKS)), metavar="TASK",
              help="Train only these tasks (repeatable), one run each. "
                   "[default: classification twice (seeds 0, 1), regression, segmentation]")
@runs_root_option
@click.option("--watch-epochs", type=click.IntRange(0, 10_000), default=WATCH_EPOCHS, show_default=True,
              help="Epochs of the run to watch: a classifier trained beside the others, paced by --pace, "
                   "so the dashboard has a run in progress for a minute or two; 0: none.")
@click.option("--pace", type=click.FloatRange(0, 10), default=WATCH_PACE_S, show_default=True, metavar="SECONDS",
              help="Sleep after every training batch of the run to watch.")
@click.option("--model-name", default="demo-classifier", show_default=True,
              help="Registered model name for the best classification run.")
@click.option("--no-serve", is_flag=True, help="Train and register, then exit (no server).")
@click.option("--no-train", is_flag=True, help="Only serve what the runs root and mlruns/ already hold.")
def command(
    port: int,
    host: str,
    epochs: int,
    tasks: tuple[str, ...],
    runs_root: str | None,
    watch_epochs: int,
    pace: float,
    model_name: str,
    no_serve: bool,
    no_train: bool,
) -> None:
    """Train short demo runs and one to watch, register the best classifier, serve the dashboard and MLflow UI.

    \b
    1. starts `mlflow server --app-name trackbridge` on --port over the
       embedded store (./mlruns/mlflow.db): the MLflow UI at /, the live
       dashboard at /trackbridge/ -- open it to watch the runs train;
    2. trains a few short runs of the reference models (MLflow mirror on),
       and beside them a classifier to watch (--watch-epochs, --pace: about
       a minute and a half by default): its charts move and its gallery
       fills epoch by epoch;
    3. registers the best classification run as --model-name (alias champion;
       the watched run too once it completes, if it does better);
    4. keeps serving until Ctrl-C, which stops everything it started (a run
       still training is recorded as stopped).

    \b
    Examples:
      trackbridge demo
      trackbridge demo --port 8080 --epochs 2 --watch-epochs 10
      trackbridge demo --no-serve --task classification --watch-epochs 0   # train + register, then exit
      trackbridge demo --no-train                                          # serve earlier runs again
    """
    from ..web.settings import TOKEN_ENV  # imports Flask: only when the command runs

    if no_serve and no_train:
        raise usage_error("--no-serve and --no-train together leave nothing to do; drop one")
    cwd = Path.cwd()
    root = Path(resolve_runs_root(runs_root)).absolute()
    mlruns = cwd / "mlruns"
    tracking_uri = default_tracking_uri(cwd)
    plan = tuple(DemoRun(task, tasks[:i].count(task)) for i, task in enumerate(tasks)) if tasks else DEFAULT_PLAN
    token = os.environ.get(TOKEN_ENV) or None
    server = None if no_serve else DemoServer(host, port, tracking_uri, mlruns, root, token)
    if server is not None and not _port_free(host, port):
        raise usage_error(f"port {port} on {host} is in use; pick another with --port")
    if server is not None and token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host} with no {TOKEN_ENV}: anyone who can reach it can stop runs", err=True)

    # SIGTERM (a service manager, `kill`) takes the same clean way out as Ctrl-C; and Ctrl-C
    # works even when a shell started us with SIGINT ignored (a background job).
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_keyboard_interrupt),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    watch = None if no_train or watch_epochs == 0 else WatchRun(root, tracking_uri, watch_epochs, pace, mlruns / "watch.log")
    done = False  # everything asked for is done: Ctrl-C is then the normal end
    try:
        click.echo(f"runs: {root}    MLflow store: {tracking_uri}")
        if server is not None:
            click.echo(f"starting the server (log: {server.log_path}) ...")
            server.start()
            _print_urls(server, None)
            # Links in run.json point at this server's MLflow UI (DESIGN §6).
            os.environ[UI_URL_ENV] = server.base_url
        registered = None
        if watch is not None:
            if server is None:
                _prepare_store(tracking_uri, mlruns)  # the server did it otherwise
            _start_watch(watch, server)
        if not no_train:
            finished = _train_all(plan, epochs, root, tracking_uri)
            registered = _register_best(finished, root, model_name, tracking_uri)
        if watch is not None and server is None:
            click.echo(f"waiting for the watched run {watch.run_id} ...")
            registered = _finish_watch(watch, root, model_name, tracking_uri) or registered
        done = True
        if server is not None:
            click.echo("")
            _print_urls(server, registered)
            click.echo("serving until Ctrl-C ...")
            while server.alive():
                if watch is not None and watch.proc is not None and not watch.running:
                    _finish_watch(watch, root, model_name, tracking_uri)
                    watch = None
                time.sleep(0.5)
            raise click.ClickException(f"the server exited unexpectedly; see {server.log_path}")
    except (KeyboardInterrupt, _Interrupted):
        click.echo("\nstopping ..." if done else "\ninterrupted; stopping ...", err=True)
        if watch is not None and watch.running:
            watch.stop()
            click.echo(f"watched run {watch.run_id} stopped", err=True)
        if server is not None:
            server.stop()
            click.echo("server stopped", err=True)
        if not done:
            raise SystemExit(130) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if watch is not None:
            watch.stop()
        if server is not None:
            server.stop()


class _Interrupted(Exception):
    """Training ended by Ctrl-C (Lightning turns KeyboardInterrupt into SystemExit)."""


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _print_urls(server: DemoServer, model: str | None) -> None:
    click.echo(f"  Dashboard:  {server.dashboard_url}")
    click.echo(f"  MLflow UI:  {server.mlflow_url}")
    if model is not None:
        click.echo(f"  Model:      {server.base_url}/#/models/{urllib.parse.quote(model, safe='')}")


def _prepare_store(tracking_uri: str, mlruns: Path) -> None:
    """Create the embedded store's tables before two processes mirror into it (creating them at once collides)."""
    from mlflow.tracking import MlflowClient

    mlruns.mkdir(parents=True, exist_ok=True)
    MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


def _start_watch(watch: WatchRun, server: DemoServer | None) -> None:
    minutes = watch.epochs * (20 * watch.pace_s + 0.3) / 60  # 20 batches per epoch, and the validation
    click.echo(
        f"[watch] {WATCH_TASK} (seed {WATCH_SEED}, {watch.epochs} epochs at {watch.pace_s:g} s per batch, "
        f"about {max(minutes, 0.1):.1f} min): run {watch.run_id}, trained beside the others (log: {watch.log_path})"
    )
    if server is not None:
        click.echo(f"      watch it live: {server.page_url('runs/' + watch.run_id)}")
    watch.start()


def _finish_watch(watch: WatchRun, root: Path, model_name: str, tracking_uri: str) -> str | None:
    """Once the watched run has ended: say how, and register it if it completed (the alias moves if it is better)."""
    watch.wait()
    run = watch.run_json()
    click.echo(f"[watch] run {watch.run_id} {_summary(run) if run else 'did not start'}; log: {watch.log_path}")
    if run.get("status") != "completed":
        return None
    return _register_best([run], root, model_name, tracking_uri)


def _train_all(plan: tuple[DemoRun, ...], epochs: int, root: Path, tracking_uri: str) -> list[dict[str, Any]]:
    """Train every run of ``plan`` in turn; returns the run.json of each finished run."""
    import lightning.pytorch as pl

    from ..callbacks.stack import build_callbacks
    from ..reference import build_reference

    finished = []
    show_bar = sys.stdout.isatty()
    for index, item in enumerate(plan, start=1):
        stack = build_callbacks(demo_config(item.task, item.seed, epochs, root, tracking_uri))
        click.echo(f"[{index}/{len(plan)}] {item.task} (seed {item.seed}): run {stack.run_id}")
        pl.seed_everything(item.seed, verbose=False)
        module, data = build_reference(item.task, seed=item.seed)
        trainer = demo_trainer(stack, epochs, show_bar=show_bar)
        try:
            trainer.fit(module, datamodule=data)
        except SystemExit:
            # Lightning's answer to Ctrl-C: the run is already recorded as stopped.
            raise _Interrupted from None
        except Exception as exc:  # one failed demo run should not hide the others
            click.echo(f"      failed: {exc} (traceback in {stack.run_dir.training_log})", err=True)
            continue
        run = stack.run_dir.read_run()
        click.echo(f"      {_summary(run)}")
        if run.get("status") == "completed":
            finished.append(run)
    return finished


def _summary(run: dict[str, Any]) -> str:
    best = (
        f"best {run['monitor']} {run['best_score']:.4f} at epoch {run['best_epoch']}"
        if run.get("best_epoch") is not None and run.get("best_score") is not None
        else "no best epoch"
    )
    return f"{run.get('status')}: {run.get('epochs_done')} epochs, {best}"


def _register_best(finished: list[dict[str, Any]], root: Path, name: str, tracking_uri: str) -> str | None:
    """Register the best completed classification run; the alias moves only if it beats the champion.

    Returns the model name, or None when nothing was registered.
    """
    best: dict[str, Any] | None = None
    for run in finished:
        if run.get("task") == "classification" and run.get("best_score") is not None:
            if best is None or is_better(run["best_score"], best["best_score"], run.get("mode") or "max"):
                best = run
    if best is None:
        click.echo("no completed classification run: nothing to register")
        return None
    from ..mirror.registry import RegistrationError
    from ..mirror.sync import register_run
    from ..record.run_dir import RunDirectory

    click.echo(
        f"registering run {best['run_id']} ({best['monitor']} {best['best_score']:.4f}) "
        f"as model {name!r} ..."
    )
    try:
        version = register_run(RunDirectory(root, best["run_id"]), name, alias="champion", tracking_uri=tracking_uri)
    except RegistrationError as exc:
        click.echo(f"      not registered: {exc}", err=True)
        return None
    if version["alias_moved"]:
        held = f"now @{version['alias']}"
    else:
        held = f"@{version['alias']} stays on the better version {version['alias_version']}"
    click.echo(f"      {name} version {version['version']} ({held}); load it with")
    click.echo(f"      mlflow.pytorch.load_model('{version['alias_uri']}')")
    return name


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        # Like the server will: a port left in TIME_WAIT by an earlier run is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
