"""SSENotifier: the run's events (DESIGN §4) → any object with ``.put(event)``."""

from __future__ import annotations

import os
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from ..events.emitter import EventEmitter, EventSink
from ..events.types import EventType, terminal_event_type
from .guard import tracking_hook
from .session import END_FLUSH_S, RunSession, StageHooks, metrics_of


class SSENotifier(StageHooks):
    """Push training events to ``event_queue`` for live GUI updates.

    ``event_queue`` is anything with ``.put(event)``: a ``queue.Queue``, or
    the session's event channel as :func:`~trackbridge.build_callbacks` wires
    it (the run's writer thread appends to events.jsonl, which numbers the
    events without a gap, then fans them out in-process). Events are
    numbered from ``first_id``. A ``progress`` event is sent during an epoch
    at most every ``progress_interval_s`` seconds. A validate or test stage
    after fit sends ``stage_end`` (``stage``, ``epoch``, ``metrics``).
    """

    def __init__(
        self,
        event_queue: EventSink,
        run_id: str | None = None,
        *,
        first_id: int = 1,
        progress_interval_s: float = 1.0,
        session: RunSession | None = None,
    ) -> None:
        if not callable(getattr(event_queue, "put", None)):
            raise TypeError(f"`event_queue` needs a .put(event) method, got {type(event_queue).__name__}")
        if first_id < 1:
            raise ValueError(f"`first_id` must be >= 1, got {first_id}")
        if progress_interval_s <= 0:
            raise ValueError(f"`progress_interval_s` must be > 0, got {progress_interval_s}")
        self.event_queue = event_queue
        self.session = session or RunSession(None)
        self.emitter = EventEmitter(event_queue, run_id, first_id)
        self.progress_interval_s = progress_interval_s
        self._last_progress = 0.0
        self._epoch_started = 0.0
        self._epoch_durations: list[float] = []
        self._saved: dict[str, int] = {}
        self._ended = False
        self._started = False

    @property
    def run_id(self) -> str | None:
        return self.emitter.run_id

    def emit(self, event_type: EventType | str, **fields: Any) -> dict[str, Any]:
        return self.emitter.emit(event_type, **fields)

    # -- hooks -------------------------------------------------------------
    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.setup(trainer)

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._ended = False
        self._started = True
        self._saved = {path: _mtime(path) for path in _checkpoint_paths(trainer)}
        self.emit(
            EventType.RUN_STARTED,
            max_epochs=trainer.max_epochs,
            start_epoch=trainer.current_epoch + 1,
            total_batches=_total_batches(trainer),
        )
        self.emit(EventType.STATUS, status="running")

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.epoch_started(trainer)
        if trainer.is_global_zero:
            self._emit_checkpoints(trainer)
        self._epoch_started = time.monotonic()
        self._last_progress = self._epoch_started

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # The hot path: one clock read per batch; the rest at most once per progress interval.
        now = time.monotonic()
        if now - self._last_progress < self.progress_interval_s or not trainer.is_global_zero:
            return
        self._progress(trainer, batch_idx, now)

    @tracking_hook
    def _progress(self, trainer: pl.Trainer, batch_idx: int, now: float) -> None:
        self._last_progress = now
        total = _total_batches(trainer)
        done = batch_idx + 1
        elapsed = now - self._epoch_started
        epoch_eta = elapsed / done * (total - done) if total else None
        self.emit(
            EventType.PROGRESS,
            epoch=trainer.current_epoch + 1,
            max_epochs=trainer.max_epochs,
            batch=done,
            total_batches=total,
            train_loss=_train_loss(trainer),
            epoch_eta_s=epoch_eta,
            eta_s=self._run_eta(trainer, epoch_eta),
        )

    @tracking_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = self.session.epoch_record(trainer)
        if record is None:
            return
        self._epoch_durations.append(record["duration_s"])
        self.emit(
            EventType.EPOCH_END,
            epoch=record["epoch"],
            max_epochs=trainer.max_epochs,
            metrics=metrics_of(record),
        )

    @tracking_hook
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._emit_checkpoints(trainer)
            self._end(trainer, None)

    @tracking_hook
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.is_global_zero and self._started:
            self._end(trainer, exception)

    # -- helpers -----------------------------------------------------------
    def record_stage(self, trainer: pl.Trainer, stage: str) -> None:
        if trainer.is_global_zero:
            record = self.session.stage_record(trainer, stage)
            self.emit(EventType.STAGE_END, stage=stage, epoch=record["epoch"], metrics=record["metrics"])

    def _end(self, trainer: pl.Trainer, exception: BaseException | None) -> None:
        if self._ended:  # exactly one terminal event per run
            return
        self._ended = True
        status, error = self.session.outcome(exception)
        fields: dict[str, Any] = {"status": status.value}
        if error is not None:
            fields["error"] = error
        self.emit(terminal_event_type(status), **fields)
        self.session.flush(END_FLUSH_S)  # when fit returns or raises, the log holds its end

    def _emit_checkpoints(self, trainer: pl.Trainer) -> None:
        """One ``checkpoint_saved`` per checkpoint file written since the last look.

        ModelCheckpoint saves in its own ``on_train_epoch_end``, which Lightning
        runs after every other callback's, so the files of an epoch are seen at
        the start of the next one (or at train end). ``trainer.current_epoch``
        then counts the finished epochs: the 1-based number of the saved one.
        """
        epoch = trainer.current_epoch
        for path in _checkpoint_paths(trainer):
            mtime = _mtime(path)
            if mtime is not None and mtime != self._saved.get(path):
                self._saved[path] = mtime
                self.emit(
                    EventType.CHECKPOINT_SAVED,
                    name=os.path.splitext(os.path.basename(path))[0],
                    path=os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path)),
                    epoch=epoch,
                )

    def _run_eta(self, trainer: pl.Trainer, epoch_eta: float | None) -> float | None:
        if epoch_eta is None or trainer.max_epochs is None or trainer.max_epochs < 0:
            return None
        remaining_epochs = trainer.max_epochs - trainer.current_epoch - 1
        per_epoch = (
            sum(self._epoch_durations) / len(self._epoch_durations)
            if self._epoch_durations
            else time.monotonic() - self._epoch_started + epoch_eta
        )
        return epoch_eta + remaining_epochs * per_epoch


def _checkpoint_paths(trainer: pl.Trainer) -> list[str]:
    paths = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            for path in (callback.best_model_path, callback.last_model_path):
                if path and path not in paths:
                    paths.append(path)
    return paths


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _total_batches(trainer: pl.Trainer) -> int | None:
    total = trainer.num_training_batches
    return int(total) if isinstance(total, (int, float)) and total != float("inf") else None


def _train_loss(trainer: pl.Trainer) -> float | None:
    metrics = trainer.callback_metrics
    for key in ("train_loss_step", "train_loss", "loss"):
        if key in metrics:
            value = float(metrics[key])
            return value if value == value and abs(value) != float("inf") else None
    return None
