"""A training SIGKILLed mid-epoch, resumed, then synced: MLflow equals the record, no (key, step) twice.

Steps are monotonic (DESIGN §6): the resumed process re-runs epoch 3 on
other (shuffled) batches, and the record keeps the first values of the
steps it already holds, recording only the steps past them; the mirror
replays what the cursor says MLflow lacks and never sends a second value
for a (key, step).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory
from trackbridge.mirror.sync import sync_run

from conftest import run_cli, wait_until
from mirror_helpers import assert_history_equals_record, total_points

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("mirror_training.py")
STEPS_PER_EPOCH = 8


def last_step(run_dir: RunDirectory) -> int:
    if not run_dir.steps_jsonl.exists():
        return -1
    lines = [line for line in run_dir.steps_jsonl.read_text().splitlines() if line.strip()]
    return max((json.loads(line)["step"] for line in lines), default=-1)


def test_sigkill_mid_epoch_3_of_5_resume_and_sync_converge(runs_root, mlflow_server):
    run_id = f"kill-{uuid.uuid4().hex[:8]}"
    run_dir = RunDirectory(runs_root, run_id)
    command = [sys.executable, str(SCRIPT), str(runs_root), run_id, "--tracking-uri", mlflow_server.url]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # mid-epoch 3: global steps 17..24; kill once steps past 20 are written
        wait_until(lambda: last_step(run_dir) >= 2 * STEPS_PER_EPOCH + 4 or first.poll() is not None, 120,
                   "the middle of epoch 3")
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    before = [json.loads(line) for line in run_dir.steps_jsonl.read_text().splitlines()]
    assert [r["epoch"] for r in run_dir.read_metrics()] == [1, 2]

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = [json.loads(line) for line in run_dir.steps_jsonl.read_text().splitlines()]
    assert after[: len(before)] == before  # the record keeps its history
    steps = [line["step"] for line in after if "train_loss_step" in line]
    assert steps == list(range(5 * STEPS_PER_EPOCH))  # each global step once, none missing
    assert [r["epoch"] for r in run_dir.read_metrics()] == [1, 2, 3, 4, 5]

    result = run_cli("sync", run_id, "--runs-root", str(runs_root))
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(mlflow_server.url)
    points = assert_history_equals_record(client, run_dir)  # equal histories, no (key, step) twice
    cursor = run_dir.read_run()["mlflow"]
    assert client.get_run(cursor["run_id"]).info.status == "FINISHED"
    assert len(client.search_runs([cursor["experiment_id"]], f"tags.`trackbridge.run_id` = '{run_id}'")) == 1
    again = sync_run(run_dir)
    assert not again.changed and again.points_added == 0, again
    assert total_points(client, cursor["run_id"]) == points
    verified = sync_run(run_dir, verify=True)  # the full history diff agrees: nothing is missing
    assert verified.points_added == 0, verified
