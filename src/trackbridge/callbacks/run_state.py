"""What the stack's callbacks share about one Trainer: the epoch clock, the record, the stop flag.

Each seed callback keeps its seed constructor and works alone, yet the epoch
record must be built once so that metrics.json, the events and MLflow carry
identical numbers (``duration_s`` and ``time`` included). The first callback
to ask builds it; the others get the same dict.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl

from ..record.clock import utc_now
from ..record.epoch import build_epoch_record
from ..record.status import RunStatus


@dataclass
class TrainerRunState:
    epoch_started: dict[int, float] = field(default_factory=dict)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    stop_requested: bool = False


_STATES: "weakref.WeakKeyDictionary[pl.Trainer, TrainerRunState]" = weakref.WeakKeyDictionary()


def state_of(trainer: pl.Trainer) -> TrainerRunState:
    state = _STATES.get(trainer)
    if state is None:
        state = _STATES[trainer] = TrainerRunState()
    return state


def mark_epoch_start(trainer: pl.Trainer) -> None:
    """Start the clock of the current epoch (idempotent: the first caller wins)."""
    state_of(trainer).epoch_started.setdefault(trainer.current_epoch, time.monotonic())


def epoch_record(trainer: pl.Trainer) -> dict[str, Any]:
    """The record of the epoch that is ending, built on first call, then shared."""
    state = state_of(trainer)
    index = trainer.current_epoch
    record = state.records.get(index)
    if record is None:
        started = state.epoch_started.get(index, time.monotonic())
        record = build_epoch_record(
            epoch=index + 1,
            metrics=trainer.callback_metrics,
            lr=current_lr(trainer),
            duration_s=time.monotonic() - started,
            time=utc_now(),
        )
        state.records = {index: record}  # only the current epoch is ever asked for
    return record


def current_lr(trainer: pl.Trainer) -> float | None:
    """The learning rate of the first optimizer's first param group."""
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, AttributeError, TypeError):
        return None


def metrics_of(record: dict[str, Any]) -> dict[str, Any]:
    """The metrics part of a record: everything but ``epoch`` and ``time``."""
    return {k: v for k, v in record.items() if k not in ("epoch", "time")}


def run_outcome(
    trainer: pl.Trainer, exception: BaseException | None = None
) -> tuple[RunStatus, str | None]:
    """How the run ended: a stop request or Ctrl-C is ``stopped``, any other error ``failed``."""
    if exception is None:
        stopped = state_of(trainer).stop_requested
        return (RunStatus.STOPPED if stopped else RunStatus.COMPLETED), None
    if isinstance(exception, KeyboardInterrupt):
        return RunStatus.STOPPED, None
    return RunStatus.FAILED, f"{type(exception).__name__}: {exception}"


def final_metrics(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The metrics of the last finished epoch, or None before the first one ends."""
    records = state_of(trainer).records
    return metrics_of(records[max(records)]) if records else None
