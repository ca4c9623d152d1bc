"""What the benchmarks share: a real ``mlflow server``, the delay proxy, fresh child processes, point counts.

Imported by the bench scripts (``sys.path`` holds this folder when they run).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "BENCH-RESULT "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server --workers 1`` on SQLite under ``root``; returns (process, URL) once it answers."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"mlflow server exited:\n{(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    raise SystemExit("mlflow server did not start within 120 s")


def start_proxy(upstream: str, delay_ms: float) -> tuple[subprocess.Popen, str]:
    """bench/delay_proxy.py in front of ``upstream`` (+``delay_ms`` per request); returns (process, URL)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "delay_proxy.py"), "--upstream", upstream, "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    return proc, proc.stdout.readline().strip()


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass


def run_child(script: str, args: list[str], scratch: Path, timeout: float = 900) -> dict:
    """Run ``script --child ARGS`` in a fresh process and workdir; returns the dict it printed after MARK."""
    workdir = Path(tempfile.mkdtemp(dir=scratch))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    out = subprocess.run(
        [sys.executable, script, "--child", *args, "--workdir", str(workdir)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith(MARK))
    result = json.loads(line[len(MARK):])
    exit_file = workdir / "exit.json"
    if exit_file.exists():
        result.update(json.loads(exit_file.read_text()))
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def report(result: dict) -> None:
    """What a child prints for :func:`run_child`."""
    print(MARK + json.dumps(result), flush=True)


def count_points(client, run_id: str) -> tuple[int, int]:
    """(points, duplicated (key, step) pairs) of an MLflow run."""
    points = dup = 0
    for key in client.get_run(run_id).data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        points += len(steps)
        dup += len(steps) - len(set(steps))
    return points, dup


def median_range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def linear_regressor(features: int):
    """A LightningModule of one linear layer (train_loss per step and epoch, val_loss, val_mae): the cheapest real model."""
    import lightning.pytorch as pl
    import torch

    class LinearRegressor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(features, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            pred = self.layer(x)
            self.log("val_loss", torch.nn.functional.mse_loss(pred, y))
            self.log("val_mae", (pred - y).abs().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return LinearRegressor()
