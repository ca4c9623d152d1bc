"""The run status enum and the one table that says which changes are allowed."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """Where a run is in its life: ``pending → running → completed | failed | stopped``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED})

# A terminal run goes back to RUNNING only when it is resumed from last.ckpt.
_ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.STOPPED}),
    RunStatus.RUNNING: TERMINAL,
    RunStatus.COMPLETED: frozenset({RunStatus.RUNNING}),
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
    RunStatus.STOPPED: frozenset({RunStatus.RUNNING}),
}


class InvalidTransitionError(ValueError):
    """Raised for a status change the lifecycle does not allow."""


def check_transition(current: RunStatus | str, new: RunStatus | str) -> RunStatus:
    """Return ``new`` as a RunStatus if ``current → new`` is allowed, else raise."""
    current, new = RunStatus(current), RunStatus(new)
    if new not in _ALLOWED[current]:
        allowed = ", ".join(s.value for s in sorted(_ALLOWED[current], key=lambda s: s.value))
        raise InvalidTransitionError(
            f"a {current.value} run cannot become {new.value}; from {current.value} it can become: {allowed}"
        )
    return new
