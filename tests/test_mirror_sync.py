"""``trackbridge sync`` against the real server: which server it talks to, idempotent resends, --verify.

The runs are synthetic finished records (bench/bench_sync.py makes them):
what sync does depends on the record and the cursor only.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory
from trackbridge.mirror.cursor import Cursor
from trackbridge.mirror.mapping import Stream
from trackbridge.mirror.sync import sync_run

from conftest import REPO, free_port
from mirror_helpers import sync_cli, total_points

sys.path.insert(0, str(REPO / "bench"))
from bench_sync import make_run  # noqa: E402

pytestmark = pytest.mark.slow

STEPS, EPOCHS = 2000, 20  # 2,160 points: three log_batch requests


def synthetic(runs_root: Path, uri: str) -> RunDirectory:
    path = make_run(runs_root, f"syn-{uuid.uuid4().hex[:8]}", uri, steps=STEPS, epochs=EPOCHS)
    return RunDirectory(path.parent, path.name)


def test_sync_goes_where_run_json_says_unless_told_and_prints_it(runs_root, mlflow_server):
    dead = f"http://127.0.0.1:{free_port()}"
    run_dir = synthetic(runs_root, dead)
    refused = sync_cli(run_dir)
    assert refused.exit_code == 1
    assert f"syncing to {dead} (from run.json)" in refused.stderr and "connection refused" in refused.stderr

    result = sync_cli(run_dir, "--tracking-uri", mlflow_server.url)
    assert result.exit_code == 0, result.stderr[-3000:]
    assert f"syncing to {mlflow_server.url} (--tracking-uri)" in result.stderr
    assert f"+{STEPS + 8 * EPOCHS} points" in result.stdout
    cursor = run_dir.read_run()["mlflow"]
    assert cursor["tracking_uri"] == mlflow_server.url and cursor["last_step_line_mirrored"] == STEPS - 1
    assert total_points(MlflowClient(mlflow_server.url), cursor["run_id"]) == STEPS + 8 * EPOCHS


def test_resending_points_with_the_records_timestamps_adds_no_row(runs_root, mlflow_server):
    run_dir = synthetic(runs_root, mlflow_server.url)
    first = sync_run(run_dir)
    client = MlflowClient(mlflow_server.url)
    rows = total_points(client, first.mlflow_run_id)
    assert rows == first.points_added == STEPS + 8 * EPOCHS
    Cursor(run_dir).update(**{stream.field: None for stream in Stream})  # a cursor that lags: a crash's

    again = sync_run(run_dir)
    assert again.points_added == rows  # every point sent again ...
    assert total_points(client, first.mlflow_run_id) == rows  # ... and MLflow's SQL store kept one of each
    assert not sync_run(run_dir).changed


def test_verify_reads_mlflow_instead_of_trusting_the_cursor(runs_root, mlflow_server):
    run_dir = synthetic(runs_root, mlflow_server.url)
    client = MlflowClient(mlflow_server.url)
    sync_run(run_dir)
    # the record gains points while the cursor claims they were delivered (an edited or copied run.json)
    lying = client.create_run(client.get_experiment_by_name("bench-sync").experiment_id,
                              tags={"trackbridge.run_id": run_dir.run_id}).info.run_id
    client.set_terminated(lying, "FINISHED")
    Cursor(run_dir).update(run_id=lying)
    assert sync_run(run_dir).points_added == 0  # trusted: nothing past the watermarks

    verified = sync_run(run_dir, verify=True)
    assert verified.points_added == STEPS + 8 * EPOCHS
    assert total_points(client, lying) == STEPS + 8 * EPOCHS
    assert sync_run(run_dir, verify=True).points_added == 0
