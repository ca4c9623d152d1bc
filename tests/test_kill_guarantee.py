"""The kill guarantee (README, "What survives a crash"): SIGKILL at random moments, 20 times.

After a SIGKILL every file parses (a JSON-lines file may end in one torn
fragment without its newline, which readers skip and the next writer cuts),
and every epoch whose ``on_train_epoch_end`` returned more than
:data:`GUARANTEE_MS` before the kill is in metrics.json and events.jsonl.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

#: The guarantee: the writer thread makes an epoch durable against a kill within this many ms.
GUARANTEE_MS = 100
TRAININGS = 20


def strict(line: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def jsonl_records(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    records = [strict(line) for line in complete]  # every whole line parses
    assert "\n" not in tail  # at most one torn fragment, at the very end
    return records


def test_sigkill_at_random_moments_keeps_every_file_valid_and_every_older_epoch(tmp_path):
    zygote = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "kill_zygote.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    rng = random.Random(20261201)
    checked_epochs = 0
    try:
        for index in range(TRAININGS):
            root, run_id = tmp_path / "runs", f"kill-{index}"
            root.mkdir(exist_ok=True)
            zygote.stdin.write(f"{root} {run_id}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0.3, 1.3))
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            run_dir = root / run_id
            if not (run_dir / "run.json").exists():
                continue  # killed before the run directory existed
            strict((run_dir / "run.json").read_text())
            metrics_path = run_dir / "metrics.json"
            recorded = {r["epoch"] for r in strict(metrics_path.read_text())["epochs"]} if metrics_path.exists() else set()
            events = jsonl_records(run_dir / "events.jsonl")
            jsonl_records(run_dir / "steps.jsonl")
            ended = {e["epoch"] for e in events if e["type"] == "epoch_end"}
            marks = Path(f"{run_dir}.epochs")
            returned = [line.split() for line in (marks.read_text().splitlines() if marks.exists() else [])]
            due = [int(epoch) for _, epoch, at in returned if killed_at - float(at) > GUARANTEE_MS / 1000]
            assert set(due) <= recorded, (run_id, sorted(set(due) - recorded))
            assert set(due) <= ended, (run_id, sorted(set(due) - ended))
            checked_epochs += len(due)
    finally:
        zygote.kill()
    assert checked_epochs > TRAININGS  # the kills landed mid-training, after epochs had ended
