"""Comparing an MLflow run with the local record, read independently of trackbridge.mirror."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory, TrackingConfig, build_callbacks


def record_series(run_dir: RunDirectory) -> dict[str, list[tuple[int, float]]]:
    """Every numeric, non-null key of metrics.json (step = epoch) and steps.jsonl (step = global step)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in json.loads(run_dir.metrics_json.read_text())["epochs"]:
        for key, value in record.items():
            if key != "time" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series[key].append((record["epoch"], float(value)))
    if run_dir.steps_jsonl.exists():
        for text in run_dir.steps_jsonl.read_text().splitlines():
            line = json.loads(text)
            for key, value in line.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    series[key].append((line["step"], float(value)))
    return dict(series)


def mlflow_series(client: MlflowClient, mlflow_run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    return {key: [(m.step, m.value) for m in client.get_metric_history(mlflow_run_id, key)] for key in keys}


def assert_history_equals_record(client: MlflowClient, run_dir: RunDirectory, mlflow_run_id: str | None = None) -> int:
    """MLflow's history of every key equals the record (values and steps, no duplicates); returns the point count."""
    mlflow_run_id = mlflow_run_id or run_dir.read_run()["mlflow"]["run_id"]
    local = record_series(run_dir)
    remote = mlflow_series(client, mlflow_run_id, local)
    assert "train_loss_step" in local and "val_loss" in local  # both kinds of points are compared
    for key, points in local.items():
        assert sorted(remote[key]) == sorted(points), (
            f"MLflow history of {key!r} differs from the record: {sorted(remote[key])} != {sorted(points)}")
        steps = [step for step, _ in remote[key]]
        assert len(steps) == len(set(steps)), f"duplicate steps in MLflow's {key!r}"
    # system/... points come from system.jsonl (a sample every 10 s: a slow run has some), not this record
    extra = {key for key in client.get_run(mlflow_run_id).data.metrics if not key.startswith("system/")} - set(local)
    assert not extra, f"MLflow has keys the record lacks: {extra}"
    return sum(len(points) for points in remote.values())


def total_points(client: MlflowClient, mlflow_run_id: str) -> int:
    keys = client.get_run(mlflow_run_id).data.metrics
    return sum(len(client.get_metric_history(mlflow_run_id, key)) for key in keys)


def artifact_paths(client: MlflowClient, mlflow_run_id: str, folder: str | None = None) -> set[str]:
    paths = set()
    for info in client.list_artifacts(mlflow_run_id, folder):
        if info.is_dir:
            paths |= artifact_paths(client, mlflow_run_id, info.path)
        else:
            paths.add(info.path)
    return paths


def read_log(run_dir: RunDirectory) -> str:
    return Path(run_dir.training_log).read_text()


class AtEpochStart(pl.Callback):
    """Runs ``action`` when epoch ``index`` (0-based) starts, and times it (test time, not mirror time)."""

    def __init__(self, index: int, action) -> None:
        self.index, self.action, self.spent = index, action, 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.index:
            start = time.monotonic()
            self.action()
            self.spent += time.monotonic() - start


def timed_fit(runs_root, tracking_uri, *hooks: AtEpochStart, epochs: int = 5, sleep_s: float = 0.05, **config):
    """Train the slow tiny model with the whole stack; returns (run_dir, mirror, fit seconds minus hook time)."""
    from tiny import TinyRegressor, tiny_loaders, tiny_trainer
    from trackbridge.callbacks.mlflow_mirror import MLflowMirror

    run_id = f"out-{uuid.uuid4().hex[:8]}"
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, run_id=run_id,
                                           tracking_uri=tracking_uri, early_stopping_patience=0, **config))
    mirror = next(cb for cb in stack.parts if isinstance(cb, MLflowMirror))
    train, val = tiny_loaders()
    trainer = tiny_trainer([*stack, *hooks], max_epochs=epochs)
    start = time.monotonic()
    trainer.fit(TinyRegressor(sleep_s=sleep_s), train, val)
    took = time.monotonic() - start - sum(hook.spent for hook in hooks)
    print(f"{run_id}: fit {took:.2f} s (hooks {sum(hook.spent for hook in hooks):.2f} s)")
    run_dir = stack.run_dir
    assert run_dir.read_run()["status"] == "completed" and trainer.current_epoch == epochs
    assert mirror.worker.crashed is None
    return run_dir, mirror, took


def sync_cli(run_dir: RunDirectory, *args: str):
    """``trackbridge sync RUN_ID --runs-root ROOT ARGS`` in this process (click's runner): exit code and output."""
    from click.testing import CliRunner

    from trackbridge.cli import main

    return CliRunner().invoke(main, ["sync", run_dir.run_id, "--runs-root", str(run_dir.runs_root), *args])
