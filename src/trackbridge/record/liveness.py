"""Liveness (DESIGN §2): is the process of a pending or running run still there?

A training process is identified by its host, the kernel's boot id, its pid
namespace, its pid and its start time (:class:`ProcessIdentity`, stored in
run.json). Only a reader that shares the run's boot and pid namespace may look
the pid up: anywhere else (another host, a container with its own pid
namespace, a later boot) the same number names another process or none. Every
other reader judges by the heartbeat alone.

The heartbeat rule never trusts a clock it does not own. A beat is fresh when

- the reader saw ``heartbeat_at`` *change* less than ``stale_after_s`` ago on
  its own monotonic clock (a long-lived reader, ``LivenessJudge(remember=True)``:
  the server), or
- on first sight, or for a one-shot reader (``trackbridge runs``): run.json's
  mtime is less than ``stale_after_s`` old (the file is rewritten at every beat
  and its mtime is stamped by the clock of the machine that holds the disk), or
  ``heartbeat_at`` is within ``stale_after_s`` of the reader's clock either way.

So a beating run on a host whose clock is minutes off is never reported dead,
and a run whose process died is reported dead within ``stale_after_s`` plus
one beat.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

from .clock import parse_iso, utc_now
from .ids import RUN_ID_PATTERN
from .run_dir import RunDirectory
from .status import RunStatus

STALE_AFTER_ENV = "TRACKBRIDGE_STALE_AFTER_S"
DEFAULT_STALE_AFTER_S = 120.0
_LIVE = (RunStatus.PENDING.value, RunStatus.RUNNING.value)
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_PID_NS = "/proc/self/ns/pid"


def default_stale_after_s(environ: Mapping[str, str] | None = None) -> float:
    """``TRACKBRIDGE_STALE_AFTER_S`` (default 120 s), read when asked, not at import."""
    raw = (os.environ if environ is None else environ).get(STALE_AFTER_ENV)
    try:
        value = float(raw) if raw else DEFAULT_STALE_AFTER_S
    except ValueError:
        return DEFAULT_STALE_AFTER_S
    return value if value > 0 else DEFAULT_STALE_AFTER_S


def process_start_time(pid: int) -> float | None:
    """The start time of process ``pid`` (epoch seconds), or None if it is gone."""
    import psutil  # only readers that judge by pid need it

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _read_boot_id() -> str | None:
    try:
        with open(_BOOT_ID, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _read_pid_namespace() -> str | None:
    try:
        return os.readlink(_PID_NS)  # "pid:[4026531836]": the namespace's inode
    except OSError:
        return None


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a process is, in terms that stay true across hosts, containers and reboots."""

    host: str | None
    boot_id: str | None
    pid_namespace: str | None
    pid: int | None
    started_at: float | None

    @classmethod
    def current(cls) -> "ProcessIdentity":
        pid = os.getpid()
        return cls(socket.gethostname(), _read_boot_id(), _read_pid_namespace(), pid, process_start_time(pid))

    @classmethod
    def of_run(cls, run: Mapping[str, Any]) -> "ProcessIdentity":
        pid = run.get("pid")
        started = run.get("pid_started_at")
        return cls(
            run.get("host"),
            run.get("boot_id"),
            run.get("pid_namespace"),
            pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            float(started) if isinstance(started, (int, float)) and not isinstance(started, bool) else None,
        )

    def as_fields(self) -> dict[str, Any]:
        """The run.json fields that record this identity."""
        return {
            "host": self.host,
            "boot_id": self.boot_id,
            "pid_namespace": self.pid_namespace,
            "pid": self.pid,
            "pid_started_at": self.started_at,
        }

    def shares_pids_with(self, other: "ProcessIdentity") -> bool:
        """Whether a pid recorded by ``other`` names the same process here (same boot, same pid namespace).

        A record without a boot id (written before trackbridge stored one)
        falls back to the host name, as it was judged then.
        """
        if other.boot_id is None or other.pid_namespace is None:
            return other.host is not None and other.host == self.host and other.boot_id is None
        return other.boot_id == self.boot_id and other.pid_namespace == self.pid_namespace


class LivenessJudge:
    """Decides, for one reader, whether a pending or running run's process is dead.

    ``stale_after_s`` is the reader's limit; a run that recorded its own
    (``stale_after_s`` in run.json, which its heartbeat interval was chosen
    for) is judged by that one. ``remember=True`` is for a long-lived reader:
    it remembers when it last saw each run's heartbeat change (see the module
    docstring). Thread-safe.
    """

    def __init__(
        self,
        stale_after_s: float | None = None,
        *,
        remember: bool = False,
        reader: ProcessIdentity | None = None,
    ) -> None:
        if stale_after_s is not None and stale_after_s <= 0:
            raise ValueError(f"`stale_after_s` must be > 0, got {stale_after_s}")
        self.stale_after_s = stale_after_s if stale_after_s is not None else default_stale_after_s()
        self.remember = remember
        self.reader = reader or ProcessIdentity.current()
        self._seen: dict[str, tuple[Any, float]] = {}  # run id -> (beat, monotonic time it was first seen)
        self._lock = threading.Lock()

    def death_reason(
        self, run: Mapping[str, Any], *, mtime: float | None = None, now: datetime | None = None
    ) -> str | None:
        """Why ``run`` (a run.json record) is dead, or None while it may be alive.

        ``mtime``: run.json's modification time (epoch seconds), when known.
        ``now``: the reader's wall clock (tests pass one).
        """
        if run.get("status") not in _LIVE:
            self._forget(run.get("run_id"))
            return None
        return self._owner_death(run, mtime, now)

    def owner_alive(self, run: Mapping[str, Any], *, mtime: float | None = None, now: datetime | None = None) -> bool:
        """Whether the process that holds ``run`` is still there, whatever its status says.

        Judged by the same rules (pid where it may be, else the heartbeat): a
        finished run whose process still holds it (``attached``) may record
        validate/test stages yet.
        """
        return self._owner_death(run, mtime, now) is None

    def _owner_death(self, run: Mapping[str, Any], mtime: float | None, now: datetime | None) -> str | None:
        owner = ProcessIdentity.of_run(run)
        if owner.pid is not None and self.reader.shares_pids_with(owner):
            return self._pid_reason(owner)
        return self._heartbeat_reason(run, owner, mtime, now or utc_now())

    # -- same boot and pid namespace: the pid answers at once ---------------------------
    def _pid_reason(self, owner: ProcessIdentity) -> str | None:
        where = f"pid {owner.pid} on {owner.host}"
        started = process_start_time(owner.pid)  # type: ignore[arg-type]
        if started is None:
            return f"the training process ({where}) exited without reporting"
        if owner.started_at is not None and abs(started - owner.started_at) > 1.0:
            return f"the training process ({where}) exited without reporting (its pid now belongs to another process)"
        return None

    # -- anyone else: the heartbeat alone ----------------------------------------------
    def _heartbeat_reason(
        self, run: Mapping[str, Any], owner: ProcessIdentity, mtime: float | None, now: datetime
    ) -> str | None:
        limit = self._limit_of(run)
        beat = run.get("heartbeat_at") or run.get("created_at")
        if not beat:
            return None  # nothing to judge by: never call a run dead on no evidence
        run_id = str(run.get("run_id"))
        mono = time.monotonic()
        with self._lock:
            seen = self._seen.get(run_id) if self.remember else None
            if seen is not None and seen[0] == beat:
                silent_for = mono - seen[1]
                if silent_for <= limit:
                    return None
                return self._stale_message(owner, silent_for, limit, "seen unchanged")
            if seen is not None:  # the beat changed since the last look: alive, whatever the clocks say
                age: float | None = 0.0
            else:
                age = self._age_on_first_sight(beat, mtime, now)
            fresh = age is not None and age <= limit
            if self.remember and fresh:
                # when the beat was written, as well as this reader can tell: death shows within limit + one beat
                self._seen[run_id] = (beat, mono - age)  # type: ignore[operator]
        if fresh:
            return None
        return self._stale_message(owner, _age_s(beat, now), limit, "last beat")

    @staticmethod
    def _age_on_first_sight(beat: str, mtime: float | None, now: datetime) -> float | None:
        """How long ago the beat was written, by the freshest evidence: run.json's mtime or the beat's own time."""
        ages = []
        if mtime is not None:
            ages.append(max(0.0, now.timestamp() - mtime))
        age = _age_s(beat, now)
        if age is not None:
            ages.append(abs(age))  # a clock ahead of ours is as unreliable as one behind
        return min(ages) if ages else None

    def _limit_of(self, run: Mapping[str, Any]) -> float:
        recorded = run.get("stale_after_s")
        if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded > 0:
            return float(recorded)
        return self.stale_after_s

    def _stale_message(self, owner: ProcessIdentity, age: float | None, limit: float, what: str) -> str:
        shown = "an unreadable time" if age is None else f"{age:.0f} s"
        return (
            f"the training process (pid {owner.pid} on {owner.host}) exited without reporting: "
            f"no heartbeat for {shown} ({what}; limit {limit:.0f} s, stale_after_s / {STALE_AFTER_ENV})"
        )

    def _forget(self, run_id: Any) -> None:
        if self.remember and run_id is not None:
            with self._lock:
                self._seen.pop(str(run_id), None)


def _age_s(beat: str, now: datetime) -> float | None:
    try:
        return (now - parse_iso(beat)).total_seconds()
    except (TypeError, ValueError):
        return None


def run_json_mtime(run_dir: RunDirectory) -> float | None:
    try:
        return os.stat(run_dir.run_json).st_mtime
    except OSError:
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
    judge: LivenessJudge | None = None,
    now: datetime | None = None,
) -> list[tuple[RunDirectory, str]]:
    """(run, reason) for each run under ``runs_root`` that is recorded live but whose process is dead.

    Reads only: nothing is written (see :func:`trackbridge.events.close_dead_runs`).
    """
    judge = judge or LivenessJudge()
    dead = []
    for run_dir in iter_runs(runs_root):
        mtime = run_json_mtime(run_dir)
        try:
            run = run_dir.read_run()
        except (OSError, ValueError):
            continue
        if not isinstance(run, dict):
            continue
        reason = judge.death_reason(run, mtime=mtime, now=now)
        if reason:
            dead.append((run_dir, reason))
    return dead
