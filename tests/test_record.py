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
    build_epoch_record,
    dumps_strict,
    JsonlAppender,
    LivenessJudge,
    ProcessIdentity,
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


def _running_run(runs_root, run_id, **fields):
    run = RunDirectory(runs_root, run_id)
    run.create()
    run.set_status("running", **fields)
    return run


def _here(**changes):
    """This process's identity as run.json records it, with ``changes``."""
    return {**ProcessIdentity.current().as_fields(), **changes}


def test_find_dead_runs_same_boot_and_namespace_dead_pid_is_dead_at_once(runs_root):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _running_run(runs_root, "gone", **_here(pid=proc.pid, pid_started_at=0.0))
    dead = find_dead_runs(runs_root)
    assert [(r.run_id, "exited without reporting" in why) for r, why in dead] == [("gone", True)]


def test_find_dead_runs_guards_against_pid_reuse(runs_root):
    me = ProcessIdentity.current()
    _running_run(runs_root, "alive", **me.as_fields())
    _running_run(runs_root, "reused", **_here(pid_started_at=me.started_at - 3600))
    assert [r.run_id for r, _ in find_dead_runs(runs_root)] == ["reused"]


def test_a_pid_from_another_pid_namespace_is_never_looked_up(runs_root):
    # pid 1 of a container is not this host's pid 1; a dead pid there says nothing either
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _running_run(runs_root, "contained", **_here(pid=proc.pid, pid_started_at=0.0, pid_namespace="pid:[1]"))
    assert find_dead_runs(runs_root) == []  # its heartbeat is fresh


def test_find_dead_runs_other_host_uses_the_heartbeat(runs_root, monkeypatch):
    _running_run(runs_root, "remote", **_here(pid=1, host="elsewhere", boot_id="other-boot"))
    now = datetime.now(timezone.utc)
    assert find_dead_runs(runs_root, now=now) == []
    later = now + timedelta(seconds=121)
    assert [r.run_id for r, _ in find_dead_runs(runs_root, now=later)] == ["remote"]
    monkeypatch.setenv("TRACKBRIDGE_STALE_AFTER_S", "300")
    assert find_dead_runs(runs_root, now=later) == []


def test_a_run_records_its_own_staleness_limit_and_readers_use_it(runs_root):
    _running_run(runs_root, "patient", **_here(pid=1, host="elsewhere", boot_id="b"), stale_after_s=600)
    later = datetime.now(timezone.utc) + timedelta(seconds=300)
    assert find_dead_runs(runs_root, now=later, judge=LivenessJudge(3)) == []


def test_a_long_lived_judge_trusts_a_changing_beat_whatever_the_clock_says(runs_root):
    import time

    run_dir = _running_run(runs_root, "skewed", **_here(pid=1, host="elsewhere", boot_id="b"))
    judge = LivenessJudge(0.5, remember=True)
    behind = datetime.now(timezone.utc) - timedelta(minutes=5)
    for beat in range(3):  # a writer whose clock is 5 minutes behind, beating every 0.3 s
        run_dir.update_run(heartbeat_at=iso(behind + timedelta(seconds=beat)))
        assert judge.death_reason(run_dir.read_run(), mtime=os.stat(run_dir.run_json).st_mtime) is None
        time.sleep(0.3)
    time.sleep(0.6)  # the beats stop: dead within the limit plus a beat, by the judge's own clock
    reason = judge.death_reason(run_dir.read_run(), mtime=os.stat(run_dir.run_json).st_mtime)
    assert reason and "no heartbeat" in reason


def test_jsonl_appender_cuts_a_torn_tail_before_appending(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, "ty')  # a writer died mid-line
    JsonlAppender(path).append({"id": 2})
    assert path.read_text() == '{"id": 1}\n{"id": 2}\n'
    assert [line["id"] for line in read_jsonl(path)] == [1, 2]


def test_jsonl_appender_cuts_back_a_failed_append(tmp_path):
    import resource

    path = tmp_path / "steps.jsonl"
    JsonlAppender(path).append({"step": 1})
    size = path.stat().st_size
    code = (
        "import resource, sys; from trackbridge.record import JsonlAppender\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 10}, {size + 10}))\n"
        "try:\n"
        f"    JsonlAppender({str(path)!r}).append({{'step': 2, 'pad': 'x' * 100}})\n"
        "except OSError as exc:\n"
        "    print(exc.errno); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 27  # EFBIG from a real kernel limit
    assert path.read_text() == '{"step": 1}\n'  # cut back: nothing half-written stays
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # (the limit was the child's only)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "run.json", {"a": 1})
        JsonlAppender(tmp_path / "events.jsonl").append({"id": 1})
    finally:
        os.umask(old)
    assert oct((tmp_path / "run.json").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "events.jsonl").stat().st_mode & 0o777) == "0o644"


def test_epoch_record_values_are_finite_or_null():
    record = build_epoch_record(epoch=2, metrics={"x": float("-inf")}, lr=None, duration_s=0.0,
                                time=datetime.now(timezone.utc))
    assert record["x"] is None and "lr" not in record
    assert all(v is None or not isinstance(v, float) or math.isfinite(v) for v in record.values())


def test_a_session_beats_from_the_moment_its_run_is_created_until_it_lets_the_run_go(runs_root):
    import time

    from trackbridge import TrackingConfig
    from trackbridge.callbacks.session import RunSession

    config = TrackingConfig(task="regression", runs_root=runs_root, run_id="beating", mlflow=False, stale_after_s=0.3)
    session = RunSession(RunDirectory(runs_root, "beating"), config=config)
    assert session.heartbeat_interval_s == pytest.approx(0.1)  # a third of the staleness limit
    session.create_run({})
    run = session.run_dir
    first = run.read_run()["heartbeat_at"]
    try:
        deadline = time.monotonic() + 5
        while run.read_run()["heartbeat_at"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.read_run()["heartbeat_at"] > first  # pending, and beating
    finally:
        session.close()
    stopped_at = run.read_run()["heartbeat_at"]
    time.sleep(0.3)
    assert run.read_run()["heartbeat_at"] == stopped_at  # no beat once the session let the run go


def test_run_status_updater_refuses_a_heartbeat_slower_than_30_s(tmp_path):
    from trackbridge import RunStatusUpdater

    with pytest.raises(ValueError, match="heartbeat_interval_s"):
        RunStatusUpdater(tmp_path / "r" / "run.json", heartbeat_interval_s=31)
