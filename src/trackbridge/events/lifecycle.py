"""Closing the record of a run whose process died: status ``failed`` plus its terminal event."""

from __future__ import annotations

import os
from datetime import datetime

from ..record.liveness import find_dead_runs
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from .emitter import EventEmitter
from .log import EventLog
from .types import EventType


def mark_dead_runs(
    runs_root: str | os.PathLike[str],
    *,
    now: datetime | None = None,
    host: str | None = None,
    stale_after: float | None = None,
) -> list[RunDirectory]:
    """Mark every dead run under ``runs_root`` ``failed`` and end its event stream.

    Returns the runs it marked. See :func:`trackbridge.record.find_dead_runs`
    for how death is decided.
    """
    marked = []
    for run_dir, reason in find_dead_runs(runs_root, now=now, host=host, stale_after=stale_after):
        run_dir.set_status(RunStatus.FAILED, error=reason)
        log = EventLog(run_dir.events_jsonl)
        EventEmitter(log, run_dir.run_id, first_id=log.last_id() + 1).emit(
            EventType.TRAINING_FAILED, error=reason
        )
        marked.append(run_dir)
    return marked
