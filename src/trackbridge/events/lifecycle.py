"""Closing the record of a run whose process died: status ``failed`` plus its terminal event.

Only the command line does this (``trackbridge runs``, ``sync``, ``train
--resume``); web requests never write a run's files, they report a dead run
as failed from a derived view. The record is closed under the run's
cross-process lock, and death is judged again inside it: a training that
beat meanwhile keeps its run. Should a live training find its run closed all
the same, it restores it (the owner wins; see
:class:`trackbridge.callbacks.session.RunSession`).
"""

from __future__ import annotations

import logging
import os

from ..record.liveness import LivenessJudge, find_dead_runs, run_json_mtime
from ..record.run_dir import RunDirectory
from ..record.status import InvalidTransitionError, RunStatus
from .log import EventLog
from .types import EventType, make_event

log = logging.getLogger(__name__)


def mark_dead_runs(runs_root: str | os.PathLike[str], *, judge: LivenessJudge | None = None) -> list[RunDirectory]:
    """Mark every dead run under ``runs_root`` ``failed`` and end its event stream; returns those marked.

    See :class:`~trackbridge.record.liveness.LivenessJudge` for how death is decided.
    """
    judge = judge or LivenessJudge()
    marked = []
    for run_dir, _ in find_dead_runs(runs_root, judge=judge):
        try:
            if close_if_dead(run_dir, judge):
                marked.append(run_dir)
        except (OSError, ValueError, InvalidTransitionError) as exc:  # a read-only root, a vanished run
            log.warning("could not close the record of dead run %s: %s", run_dir.run_id, exc)
    return marked


def close_if_dead(run_dir: RunDirectory, judge: LivenessJudge) -> bool:
    """Under the run's lock: if the run is still judged dead, mark it failed and append ``training_failed``."""
    with run_dir.lock():
        mtime = run_json_mtime(run_dir)
        reason = judge.death_reason(run_dir.read_run(), mtime=mtime)
        if reason is None:
            return False
        run_dir.set_status(RunStatus.FAILED, error=reason)
        EventLog(run_dir.events_jsonl).put(make_event(0, EventType.TRAINING_FAILED, run_dir.run_id, error=reason))
    return True
