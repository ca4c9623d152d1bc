"""The record layer: run ids, strict atomic JSON, status transitions, epoch records, liveness."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from trackbridge.record import (
    InvalidRunIdError,
    InvalidTransitionError,
    RunDirectory,
    RunExistsError,
    RunStatus,
    best_epoch_of,
    build_epoch_record,
    dumps_strict,
    find_dead_runs,
    new_run_id,
    read_jsonl,
    validate_run_id,
    write_json_atomic,
)
from trackbridge.record.clock import iso
from trackbridge.record.status import check_transition


def strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("run_id", ["a", "exp-42", "20261129-174605-123-abc", "A.b_c-9", "x" * 128])
def test_validate_run_id_accepts_url_safe_ids(run_id):
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id",
    ["", "..", ".hidden", "-x", "a/b", "a\\b", "/abs", "a b", "a\x00b", "x" * 129, "%2e%2e", "é", None, 42],
)
def test_validate_run_id_refuses_unsafe_ids(run_id):
    with pytest.raises(InvalidRunIdError, match="invalid run id"):
        validate_run_id(run_id)


def test_new_run_id_is_valid_and_sorts_by_creation_time():
    t0 = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
    ids = [new_run_id(t0 + timedelta(milliseconds=ms)) for ms in (0, 1, 999, 1000, 60_000)]
    assert all(validate_run_id(i) for i in ids)
    assert ids == sorted(ids)
    assert new_run_id() != new_run_id()


def test_dumps_strict_turns_nan_and_inf_into_null():
    text = dumps_strict({"a": float("nan"), "b": [float("inf"), -float("inf")], "c": 1.5})
    assert strict_loads(text) == {"a": None, "b": [None, None], "c": 1.5}


def test_write_json_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"v": 1})
    write_json_atomic(path, {"v": float("nan")})
    assert strict_loads(path.read_text()) == {"v": None}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "ty')
    assert [e["id"] for e in read_jsonl(path)] == [1, 2]


@pytest.mark.parametrize(
    "current,new,ok",
    [
        ("pending", "running", True),
        ("running", "completed", True),
        ("running", "failed", True),
        ("running", "stopped", True),
        ("pending", "failed", True),
        ("pending", "completed", False),
        ("completed", "failed", False),
        ("running", "pending", False),
        ("stopped", "running", True),  # resume
    ],
)
def test_check_transition_follows_the_lifecycle(current, new, ok):
    if ok:
        assert check_transition(current, new) is RunStatus(new)
    else:
        with pytest.raises(InvalidTransitionError, match=f"cannot become {new}"):
            check_transition(current, new)


def test_run_directory_create_refuses_an_existing_id(runs_root):
    run = RunDirectory(runs_root, "r1")
    run.create({"task": "regression"})
    assert run.read_run()["status"] == "pending"
    with pytest.raises(RunExistsError, match="already exists"):
        RunDirectory(runs_root, "r1").create()


def test_run_directory_set_status_stamps_times(runs_root):
    run = RunDirectory(runs_root, "r2")
    run.create()
    run.set_status("running")
    done = run.set_status("completed", best_epoch=2, best_score=0.5)
    assert done["status"] == "completed"
    assert done["started_at"] <= done["completed_at"]
    assert done["best_epoch"] == 2 and done["best_score"] == 0.5
    with pytest.raises(InvalidTransitionError):
        run.set_status("failed")


def test_run_directory_paths_follow_the_design(runs_root):
    run = RunDirectory(runs_root, "r3")
    rel = {k: str(getattr(run, k).relative_to(run.path)) for k in
           ("run_json", "metrics_json", "events_jsonl", "steps_jsonl", "best_ckpt", "last_ckpt", "training_log")}
    assert rel == {
        "run_json": "run.json", "metrics_json": "metrics.json", "events_jsonl": "events.jsonl",
        "steps_jsonl": "steps.jsonl", "best_ckpt": "checkpoints/best.ckpt",
        "last_ckpt": "checkpoints/last.ckpt", "training_log": "logs/training.log",
    }
    assert RunDirectory.from_file(run.training_log).path == run.path


def test_build_epoch_record_keeps_metrics_as_floats_and_time_as_text():
    moment = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    record = build_epoch_record(
        epoch=1, metrics={"val_loss": 0.5, "train_loss_step": 9.0, "bad": float("nan")},
        lr=0.001, duration_s=1.25, time=moment,
    )
    assert record == {"epoch": 1, "val_loss": 0.5, "bad": None, "lr": 0.001, "duration_s": 1.25, "time": iso(moment)}


def test_best_epoch_of_respects_mode_and_keeps_the_earliest_tie():
    records = [{"epoch": 1, "m": 0.5}, {"epoch": 2, "m": 0.7}, {"epoch": 3, "m": 0.7}, {"epoch": 4, "m": None}]
    assert best_epoch_of(records, "m", "max") == (2, 0.7)
    assert best_epoch_of(records, "m", "min") == (1, 0.5)
    assert best_epoch_of([], "m", "min") is None


def _running_run(runs_root, run_id, **fields):
    run = RunDirectory(runs_root, run_id)
    run.create()
    run.set_status("running", **fields)
    return run


def test_find_dead_runs_same_host_dead_pid_is_dead_at_once(runs_root):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _running_run(runs_root, "gone", pid=proc.pid, host=socket.gethostname(), pid_started_at=0.0)
    dead = find_dead_runs(runs_root)
    assert [(r.run_id, "exited without reporting" in why) for r, why in dead] == [("gone", True)]


def test_find_dead_runs_guards_against_pid_reuse(runs_root):
    import psutil

    me = os.getpid()
    started = psutil.Process(me).create_time()
    _running_run(runs_root, "alive", pid=me, host=socket.gethostname(), pid_started_at=started)
    _running_run(runs_root, "reused", pid=me, host=socket.gethostname(), pid_started_at=started - 3600)
    assert [r.run_id for r, _ in find_dead_runs(runs_root)] == ["reused"]


def test_find_dead_runs_other_host_uses_the_heartbeat(runs_root, monkeypatch):
    _running_run(runs_root, "remote", pid=1, host="elsewhere")
    now = datetime.now(timezone.utc)
    assert find_dead_runs(runs_root, now=now) == []
    later = now + timedelta(seconds=121)
    assert [r.run_id for r, _ in find_dead_runs(runs_root, now=later)] == ["remote"]
    monkeypatch.setenv("TRACKBRIDGE_STALE_AFTER_S", "300")
    assert find_dead_runs(runs_root, now=later) == []


def test_epoch_record_values_are_finite_or_null():
    record = build_epoch_record(epoch=2, metrics={"x": float("-inf")}, lr=None, duration_s=0.0,
                                time=datetime.now(timezone.utc))
    assert record["x"] is None and "lr" not in record
    assert all(v is None or not isinstance(v, float) or math.isfinite(v) for v in record.values())


def test_heartbeat_refreshes_run_json_while_alive(runs_root):
    import time

    from trackbridge.callbacks.heartbeat import Heartbeat

    run = _running_run(runs_root, "beating", pid=os.getpid(), host=socket.gethostname())
    first = run.read_run()["heartbeat_at"]
    beat = Heartbeat(run, interval_s=0.05)
    beat.start()
    try:
        deadline = time.monotonic() + 5
        while run.read_run()["heartbeat_at"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        beat.stop()
    assert run.read_run()["heartbeat_at"] > first
    stopped_at = run.read_run()["heartbeat_at"]
    time.sleep(0.2)
    assert run.read_run()["heartbeat_at"] == stopped_at  # no beat after stop()


def test_run_status_updater_refuses_a_heartbeat_slower_than_30_s(tmp_path):
    from trackbridge import RunStatusUpdater

    with pytest.raises(ValueError, match="heartbeat_interval_s"):
        RunStatusUpdater(tmp_path / "r" / "run.json", heartbeat_interval_s=31)
