"""A healthy run is never reported dead; a dead one is, within the limit plus a beat (real processes).

DESIGN §2's liveness rules, tried the way they break in the field: a training
in its own pid namespace (a container sharing the host name), a long data
preparation before ``fit``, a host whose clock is minutes off, a reader that
marks a live run dead anyway (the owner wins), and a process that really died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import REPO, run_cli, wait_until

SLOW_TRAINING = Path(__file__).with_name("slow_training.py")
STALE = "3"  # seconds: a run's heartbeat then beats every second


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TRACKBRIDGE_STALE_AFTER_S=STALE, PYTHONPATH=str(REPO / "tests"))
    env.update(extra)
    return env


def _runs(root: Path) -> dict[str, dict]:
    out = run_cli("runs", "--runs-root", str(root), "--json", env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    return {run["run_id"]: run for run in json.loads(out.stdout)}


def _require_pid_namespaces() -> None:
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine refuses a new pid namespace (needs root): {probe.stderr.strip()}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_training_in_its_own_pid_namespace_is_alive_to_outside_readers_throughout(tmp_path):
    """Pending 10 s in data preparation, then training, in a pid namespace of its own: never reported dead."""
    _require_pid_namespaces()
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(SLOW_TRAINING), str(root), "ns-run",
         "--pending", "10", "--epochs", "4", "--sleep", "0.1"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: (root / "ns-run" / "run.json").is_file(), timeout=60, what="the run directory")
        assert _read_json(root / "ns-run" / "run.json")["pid_namespace"] != os.readlink("/proc/self/ns/pid")
        seen = []
        while proc.poll() is None:
            status = _runs(root).get("ns-run", {}).get("status")
            if proc.poll() is None and status is not None:
                seen.append(status)
            time.sleep(0.5)
        output = proc.stdout.read().decode(errors="replace")
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "failed" not in seen, seen
    assert seen.count("pending") >= 3 and "running" in seen, seen  # observed through the 10 s of preparation
    assert _read_json(root / "ns-run" / "run.json")["status"] == "completed"
    assert _runs(root)["ns-run"]["status"] == "completed"


def test_the_owner_wins_over_a_reader_that_marked_its_live_run_failed(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, str(SLOW_TRAINING), str(root), "owned", "--epochs", "6", "--sleep", "0.08",
         "--tracking-uri", mlflow_server.url],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    run_dir = root / "owned"
    try:
        wait_until(lambda: (run_dir / "metrics.json").is_file() and _epochs(run_dir) >= 2, timeout=120,
                   what="two epochs")
        # A reader with a wrong judgement (a skewed clock, a bug) closes the record under the run's lock.
        marker = (
            "import sys\n"
            "from trackbridge.events.lifecycle import close_if_dead\n"
            "from trackbridge.record import LivenessJudge, RunDirectory\n"
            "class Mistaken(LivenessJudge):\n"
            "    def death_reason(self, run, **kw):\n"
            "        return 'judged dead by a reader with a wrong clock'\n"
            "assert close_if_dead(RunDirectory(sys.argv[1], 'owned'), Mistaken())\n"
        )
        marked = subprocess.run([sys.executable, "-c", marker, str(root)], env=_env(), capture_output=True, text=True)
        assert marked.returncode == 0, marked.stderr
        assert _read_json(run_dir / "run.json")["status"] == "failed"
        output, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    output = output.decode(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    run = _read_json(run_dir / "run.json")
    assert run["status"] == "completed" and run["error"] is None
    assert run["recoveries"][0]["status"] == "failed"
    assert "restored to running" in (run_dir / "logs" / "training.log").read_text()
    assert "restored to running" in output  # and on the console
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))  # gapless, the marker's event included
    types = [e["type"] for e in events]
    failed_at = types.index("training_failed")
    assert events[failed_at + 1 :] and any(e.get("recovered") for e in events[failed_at + 1 :])
    assert types[-1] == "training_complete"
    mlflow_run = MlflowClient(mlflow_server.url).get_run(run["mlflow"]["run_id"])
    assert mlflow_run.info.status == "FINISHED"


def _epochs(run_dir: Path) -> int:
    try:
        return len(_read_json(run_dir / "metrics.json")["epochs"])
    except (OSError, ValueError):
        return 0


def _fake_remote_run(root: Path, run_id: str, skew: timedelta, interval: float = 0.5) -> subprocess.Popen:
    """A process that keeps a run of another host beating, its clock ``skew`` off ours."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    created = (datetime.now(timezone.utc) + skew).isoformat().replace("+00:00", "Z")
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": run_id, "status": "running", "task": "regression", "created_at": created,
        "host": "elsewhere", "boot_id": "another-boot", "pid_namespace": "pid:[1]", "pid": 4242,
        "pid_started_at": 1.0, "heartbeat_at": created, "epochs_done": 1, "max_epochs": 9,
    }))
    code = (
        "import sys, time\n"
        "from datetime import datetime, timedelta, timezone\n"
        "from trackbridge.record import RunDirectory\n"
        "run = RunDirectory(sys.argv[1], sys.argv[2]); skew = timedelta(seconds=float(sys.argv[3]))\n"
        "while True:\n"
        "    beat = (datetime.now(timezone.utc) + skew).isoformat().replace('+00:00', 'Z')\n"
        "    run.update_run(heartbeat_at=beat)\n"
        f"    time.sleep({interval})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(root), run_id, str(skew.total_seconds())], env=_env())


@pytest.mark.parametrize("skew_s", [-300, 300, -2])
def test_a_beating_run_of_a_host_with_a_skewed_clock_stays_alive_and_dies_within_the_limit(tmp_path, skew_s):
    root = tmp_path / "runs"
    writer = _fake_remote_run(root, "remote", timedelta(seconds=skew_s))
    try:
        for _ in range(3):
            time.sleep(1.0)
            assert _runs(root)["remote"]["status"] == "running"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    killed_at = time.monotonic()
    # `trackbridge runs` is a one-shot reader: each poll costs a process start (about a second here)
    wait_until(lambda: _runs(root)["remote"]["status"] == "failed", timeout=30, what="the dead run", interval=0.2)
    elapsed = time.monotonic() - killed_at
    assert elapsed <= float(STALE) + 0.5 + 3.0, elapsed  # the limit, one beat, and the polls' own start-up
    run = _read_json(root / "remote" / "run.json")
    assert run["status"] == "failed" and "no heartbeat" in run["error"]
