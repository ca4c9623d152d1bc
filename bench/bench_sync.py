"""Benchmark: ``trackbridge sync`` at scale (issue 14) — a big run into an empty MLflow run, then a no-op re-sync.

    python bench/bench_sync.py --rounds 3

A synthetic finished run of 100,000 step points (steps.jsonl, one metric a
line) and 1,000 epochs (metrics.json, 8 numbers each): 108,000 points. Each
round makes a fresh copy of it (a new run id, never mirrored) and times, in
this process:

  first sync    the run into a new, empty MLflow run on a local
                ``mlflow server --workers 1`` (log_batch of 1,000 points a
                request, SYNC_THREADS requests at a time)
  no-op sync    the same run again right after: the cursor says all is there

plus, once, the no-op sync as a fresh ``trackbridge sync`` process (its
interpreter and MLflow import included), and the check that resending the
last tenth of the points with the record's own timestamps (the cursor set
back, as a crash might leave it) adds no row to MLflow's histories: MLflow's
SQL store drops identical points. Medians of the rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_mirror import start_server  # noqa: E402

STEPS = 100_000
EPOCHS = 1_000
EPOCH_KEYS = ("train_loss", "val_loss", "val_mae", "lr", "duration_s", "train_loss_epoch", "lr-SGD")  # + "epoch"


def make_run(runs_root: Path, run_id: str, tracking_uri: str, steps: int = STEPS, epochs: int = EPOCHS) -> Path:
    """A finished run directory with ``steps`` step points and ``epochs`` epoch records (8 points each)."""
    from trackbridge.mirror.cursor import initial_cursor
    from trackbridge.record.clock import iso
    from trackbridge.record.jsonio import write_json_atomic
    from trackbridge.record.run_dir import RunDirectory

    run_dir = RunDirectory(runs_root, run_id)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    run_dir.create({"task": "regression", "monitor": "val_mae", "mode": "min", "status": "completed",
                    "started_at": iso(start), "completed_at": iso(start + timedelta(hours=10)),
                    "config": {"task": "regression", "mirror_checkpoints": "none"},
                    "mlflow": initial_cursor(tracking_uri, "bench-sync")})
    per_epoch = steps // epochs
    with open(run_dir.steps_jsonl, "w", encoding="utf-8") as fh:
        for step in range(steps):
            moment = iso(start + timedelta(milliseconds=step * 300))
            fh.write(json.dumps({"step": step, "time": moment, "train_loss_step": 1.0 / (1 + step)}) + "\n")
    records = []
    for epoch in range(1, epochs + 1):
        moment = iso(start + timedelta(milliseconds=epoch * per_epoch * 300))
        records.append({"epoch": epoch, **{key: 1.0 / (epoch + i) for i, key in enumerate(EPOCH_KEYS)},
                        "time": moment})
    write_json_atomic(run_dir.metrics_json, {"epochs": records, "stages": []})
    return run_dir.path


def timed_sync(run_path: Path, threads: int) -> tuple[float, object]:
    from trackbridge.mirror.sync import SyncJob
    from trackbridge.record.run_dir import RunDirectory

    run_dir = RunDirectory(run_path.parent, run_path.name)
    started = time.perf_counter()
    result = SyncJob(run_dir, threads=threads).run()
    return time.perf_counter() - started, result


def store_floor(scratch: Path, run_path: Path) -> float:
    """The same log_batch requests written straight into MLflow's SQL store in this process: the server's floor.

    What an ``mlflow server --workers 1`` on SQLite spends on the rows alone,
    without HTTP, JSON or the client: the part of the first sync that no
    client can take away.
    """
    from mlflow.entities import Metric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from trackbridge.mirror.backlog import record_points
    from trackbridge.mirror.mapping import batches
    from trackbridge.record.run_dir import RunDirectory

    points = record_points(RunDirectory(run_path.parent, run_path.name))
    store = SqlAlchemyStore(f"sqlite:///{scratch / 'floor.db'}", str(scratch / "floor-artifacts"))
    run_id = store.create_run("0", "bench", 0, [], "floor").info.run_id
    requests = [[Metric(t.point.key, t.point.value, t.point.timestamp, t.point.step) for t in batch]
                for batch in batches(points)]
    started = time.perf_counter()
    for metrics in requests:
        store.log_batch(run_id, metrics=metrics, params=[], tags=[])
    return time.perf_counter() - started


def history_rows(tracking_uri: str, mlflow_run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    keys = client.get_run(mlflow_run_id).data.metrics
    return sum(len(client.get_metric_history(mlflow_run_id, key)) for key in keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--tracking-uri", help="an existing server instead of a fresh local one")
    parser.add_argument("--threads", type=int, default=None, help="concurrent requests [SYNC_THREADS]")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from trackbridge.mirror.sync import SYNC_THREADS

    threads = args.threads or SYNC_THREADS

    scratch = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    server = None
    try:
        if args.tracking_uri:
            url = args.tracking_uri
        else:
            (scratch / "mlflow").mkdir()
            server, url = start_server(scratch / "mlflow")
        from mlflow.tracking import MlflowClient

        MlflowClient(url).search_experiments()  # the server's first request sets it up: not part of a sync
        points = args.steps + 8 * args.epochs
        print(f"mlflow server {url} (--workers 1), {points:,} points "
              f"({args.steps:,} steps, {args.epochs:,} epochs), {threads} requests at a time; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        first, noop, last = [], [], None
        for round_ in range(1, args.rounds + 1):
            run_path = make_run(scratch / "runs", f"big-{round_}-{os.getpid()}-{int(time.time())}", url,
                                args.steps, args.epochs)
            took, result = timed_sync(run_path, threads)
            assert result.points_added == points, result
            again, second = timed_sync(run_path, threads)
            assert second.points_added == 0 and not second.changed, second
            first.append(took)
            noop.append(again)
            last = (run_path, result)
            print(f"round {round_}: first sync {took:.2f} s, no-op sync {again:.3f} s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
        run_path, result = last
        started = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "trackbridge", "sync", run_path.name,
                              "--runs-root", str(run_path.parent)], capture_output=True, text=True)
        cli_s = time.perf_counter() - started
        assert cli.returncode == 0 and "already in sync" in cli.stdout, cli.stderr[-2000:]

        # resending points with the record's timestamps (the last tenth of the record, as a cursor a crash
        # left behind would have it resend) adds no row
        rows = history_rows(url, result.mlflow_run_id)
        from trackbridge.mirror.cursor import Cursor
        from trackbridge.mirror.mapping import Stream
        from trackbridge.record.run_dir import RunDirectory

        Cursor(RunDirectory(run_path.parent, run_path.name)).update(**{
            Stream.STEP.field: args.steps * 9 // 10 - 1, Stream.EPOCH.field: args.epochs * 9 // 10})
        resend_s, resent = timed_sync(run_path, threads)
        rows_after = history_rows(url, result.mlflow_run_id)
        floor = store_floor(scratch, run_path)
        print()
        print(f"| sync of {points:,} points | median of {args.rounds} | rounds |")
        print("|---|---|---|")
        print(f"| first sync, into an empty MLflow run | {statistics.median(first):.2f} s | "
              f"{', '.join(f'{t:.2f}' for t in first)} |")
        print(f"| no-op re-sync (in process) | {statistics.median(noop):.3f} s | "
              f"{', '.join(f'{t:.3f}' for t in noop)} |")
        print(f"| no-op re-sync (`trackbridge sync`, a new process) | {cli_s:.2f} s | 1 |")
        print(f"| resend of {resent.points_added:,} points MLflow holds (cursor set back) | {resend_s:.2f} s | "
              f"rows {rows:,} -> {rows_after:,}: {'idempotent' if rows == rows_after else 'DUPLICATED'} |")
        print(f"| the same {points:,} points straight into MLflow's SQL store, no HTTP (the server's floor) | "
              f"{floor:.2f} s | 1 |")
    finally:
        if server is not None:
            import signal

            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
