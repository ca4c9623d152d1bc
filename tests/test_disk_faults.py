"""A full disk, a file-size limit, a torn line: the record stays valid and the training's outcome is its own.

Faults are caused for real: the kernel's file-size limit (RLIMIT_FSIZE, set in
the training process before it starts: every write past it fails with EFBIG,
as on a full disk), and torn lines written by the test as a crash would
leave them.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SLOW_TRAINING = Path(__file__).with_name("slow_training.py")


def strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _train_under_limit(root: Path, run_id: str, limit_bytes: int, epochs: int) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, str(SLOW_TRAINING), str(root), run_id, "--epochs", str(epochs), "--sleep", "0",
         "--steps-every", "1"],
        env=dict(os.environ, PYTHONPATH=str(REPO / "tests")), preexec_fn=limit,
        capture_output=True, text=True, timeout=300,
    )


def test_a_tracking_file_that_cannot_grow_never_fails_the_training(tmp_path):
    # 8 KB: the tiny model's checkpoints (about 5 KB), run.json and metrics.json fit;
    # steps.jsonl, events.jsonl and training.log outgrow it (about 12, 11 and 9 KB by epoch 15).
    root = tmp_path / "runs"
    out = _train_under_limit(root, "limited", 8 * 1024, epochs=15)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = root / "limited"
    assert strict_loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert [e["epoch"] for e in strict_loads((run_dir / "metrics.json").read_text())["epochs"]] == list(range(1, 16))
    console = out.stdout + out.stderr
    assert console.count("cannot write") == 1, console[-3000:]  # said once, for the whole outage
    assert "File too large" in console
    for name in ("events.jsonl", "steps.jsonl"):  # cut back to whole lines: every line parses
        for line in (run_dir / name).read_text().splitlines():
            strict_loads(line)
        assert (run_dir / name).stat().st_size <= 8 * 1024


def test_a_checkpoint_the_disk_refuses_fails_the_run_with_that_error(tmp_path):
    # 4 KB: run.json, metrics.json and the events fit; the first checkpoint (about 5 KB) does not.
    root = tmp_path / "runs"
    out = _train_under_limit(root, "nockpt", 4 * 1024, epochs=3)
    assert out.returncode != 0
    run_dir = root / "nockpt"
    run = strict_loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed"
    assert "OSError" in run["error"] and "File too large" in run["error"], run["error"]
    strict_loads((run_dir / "metrics.json").read_text())
    events = [strict_loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "training_failed" and "File too large" in events[-1]["error"]


def test_torn_last_lines_are_cut_before_the_next_append_and_on_resume(tmp_path):
    from trackbridge.web import create_app

    root = tmp_path / "runs"
    first = subprocess.run(
        [sys.executable, "-m", "trackbridge", "train", "--task", "regression", "--run-id", "torn", "--epochs", "2",
         "--runs-root", str(root), "--no-mlflow"],
        capture_output=True, text=True, timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = root / "torn"
    events_before = (run_dir / "events.jsonl").read_text().splitlines()
    steps_before = (run_dir / "steps.jsonl").read_text().splitlines()
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write('{"id": 999, "type": "epoch_e')  # a crash mid-append
    with open(run_dir / "steps.jsonl", "a") as fh:
        fh.write('{"step": 9999, "train_lo')
    resumed = subprocess.run(
        [sys.executable, "-m", "trackbridge", "train", "--resume", "torn", "--epochs", "4", "--runs-root", str(root),
         "--no-mlflow"],
        capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [strict_loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    steps = [strict_loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert events[: len(events_before)] == [strict_loads(line) for line in events_before]  # nothing lost
    assert steps[: len(steps_before)] == [strict_loads(line) for line in steps_before]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [1, 2, 3, 4]
    assert events[-1]["type"] == "training_complete"
    assert all(s["step"] != 9999 for s in steps)
    # a stream of the run replays to its end and stops there
    body = create_app(root).test_client().get("/api/training/torn/stream").get_data(as_text=True)
    ids = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
    assert ids == [e["id"] for e in events]
