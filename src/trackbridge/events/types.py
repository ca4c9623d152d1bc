"""Event types and the one function that shapes an event."""

from __future__ import annotations

from enum import Enum
from typing import Any

from ..record.clock import utc_now_iso
from ..record.status import RunStatus


class EventType(str, Enum):
    RUN_STARTED = "run_started"
    EPOCH_END = "epoch_end"
    PROGRESS = "progress"
    CHECKPOINT_SAVED = "checkpoint_saved"
    STATUS = "status"
    MEDIA = "media"
    SYSTEM = "system"
    STAGE_END = "stage_end"
    TRAINING_COMPLETE = "training_complete"
    TRAINING_FAILED = "training_failed"
    TRAINING_STOPPED = "training_stopped"

    def __str__(self) -> str:
        return self.value


TERMINAL_EVENT_TYPES = frozenset(
    {EventType.TRAINING_COMPLETE.value, EventType.TRAINING_FAILED.value, EventType.TRAINING_STOPPED.value}
)

_TERMINAL_BY_STATUS = {
    RunStatus.COMPLETED: EventType.TRAINING_COMPLETE,
    RunStatus.FAILED: EventType.TRAINING_FAILED,
    RunStatus.STOPPED: EventType.TRAINING_STOPPED,
}


def terminal_event_type(status: RunStatus | str) -> EventType:
    """The one terminal event that goes with a terminal run status."""
    return _TERMINAL_BY_STATUS[RunStatus(status)]


def make_event(event_id: int, event_type: EventType | str, run_id: str | None, **fields: Any) -> dict[str, Any]:
    """``{"id", "type", "run_id", "time", ...fields}``: the shape every transport sends."""
    return {
        "id": int(event_id),
        "type": str(EventType(event_type)),
        "run_id": run_id,
        "time": utc_now_iso(),
        **fields,
    }
