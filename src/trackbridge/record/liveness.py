"""Finding runs whose training process died without reporting (SIGKILL, OOM, power loss)."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

import psutil

from .clock import parse_iso, utc_now
from .ids import RUN_ID_PATTERN
from .run_dir import RunDirectory
from .status import RunStatus

STALE_AFTER_ENV = "TRACKBRIDGE_STALE_AFTER_S"
DEFAULT_STALE_AFTER_S = 120.0
_LIVE = (RunStatus.PENDING.value, RunStatus.RUNNING.value)


def stale_after_s() -> float:
    """``TRACKBRIDGE_STALE_AFTER_S`` (default 120), read when asked, not at import."""
    raw = os.environ.get(STALE_AFTER_ENV)
    try:
        return float(raw) if raw else DEFAULT_STALE_AFTER_S
    except ValueError:
        return DEFAULT_STALE_AFTER_S


def process_start_time(pid: int) -> float | None:
    """The start time of process ``pid`` (epoch seconds), or None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def death_reason(
    run: Mapping[str, Any], *, now: datetime, host: str, stale_after: float
) -> str | None:
    """Why a pending/running run is dead, or None if it may still be alive.

    On the run's own host the pid answers at once; the process start time
    guards against the pid having been reused by another process. From
    another host only the heartbeat can tell.
    """
    if run.get("status") not in _LIVE:
        return None
    pid, run_host = run.get("pid"), run.get("host")
    if run_host == host and isinstance(pid, int):
        started = process_start_time(pid)
        recorded = run.get("pid_started_at")
        if started is None:
            return f"the training process (pid {pid} on {host}) exited without reporting"
        if isinstance(recorded, (int, float)) and abs(started - recorded) > 1.0:
            return (
                f"the training process (pid {pid} on {host}) exited without reporting "
                "(its pid now belongs to another process)"
            )
        return None
    beat = run.get("heartbeat_at") or run.get("created_at")
    if not beat:
        return None
    age = (now - parse_iso(beat)).total_seconds()
    if age > stale_after:
        return (
            f"the training process (pid {pid} on {run_host}) exited without reporting: "
            f"no heartbeat for {age:.0f} s (limit {stale_after:.0f} s, {STALE_AFTER_ENV})"
        )
    return None


def iter_runs(runs_root: str | os.PathLike[str]) -> Iterator[RunDirectory]:
    """Every run directory under ``runs_root`` that has a run.json, sorted by id."""
    root = Path(runs_root)
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if RUN_ID_PATTERN.fullmatch(child.name) and (child / RunDirectory.RUN_JSON).is_file():
            yield RunDirectory(root, child.name)


def find_dead_runs(
    runs_root: str | os.PathLike[str],
    *,
    now: datetime | None = None,
    host: str | None = None,
    stale_after: float | None = None,
) -> list[tuple[RunDirectory, str]]:
    """(run, reason) for each run under ``runs_root`` that is marked live but is dead."""
    now = now or utc_now()
    host = host or socket.gethostname()
    stale_after = stale_after_s() if stale_after is None else stale_after
    dead = []
    for run_dir in iter_runs(runs_root):
        try:
            run = run_dir.read_run()
        except (OSError, ValueError):
            continue
        reason = death_reason(run, now=now, host=host, stale_after=stale_after)
        if reason:
            dead.append((run_dir, reason))
    return dead
