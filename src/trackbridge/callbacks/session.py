"""RunSession: what the callbacks of one run share, passed to each of them explicitly.

:func:`~trackbridge.callbacks.build_callbacks` makes one session per run and
hands it to every callback and to the Lightning logger, so the epoch record
is built once (metrics.json, the events and MLflow carry identical numbers,
``duration_s`` and ``time`` included), one :class:`RecordWriter` thread
writes the record, and a stop request or a status reaches every part. A seed
callback built on its own (``JSONMetricLogger(path)``) makes a session of its
own.

The session also carries the run's lifecycle as this process sees it, which
decides the *owner wins* rule: a process that is training its run and finds
it marked ``failed`` by someone else (a reader that judged it dead) restores
``running`` at its next heartbeat — a warning in training.log and on the
console, and a ``status`` event ``{"status": "running", "recovered": true}``
after whatever terminal event the marker wrote — and finishes normally.

A session pickles (``ddp_spawn``): its threads are left behind and made
again, lazily, where it is unpickled.
"""

from __future__ import annotations

import atexit
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..console import announce
from ..events.broker import default_broker
from ..events.types import EventType, make_event
from ..record.clock import utc_now, utc_now_iso
from ..record.epoch import STEP_SUFFIX, as_float, build_epoch_record
from ..record.liveness import ProcessIdentity, default_stale_after_s
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus, check_transition
from .guard import TrackingErrors, tracking_hook
from .record_writer import DiskOutage, RecordWriter

import lightning.pytorch as pl

if TYPE_CHECKING:
    from ..config import TrackingConfig

#: How long the end of training (or of a stage) waits for the record to be on disk (a full disk makes it give up).
END_FLUSH_S = 10.0

# Events a reader waits for: they wake the writer at once (steps and progress ride the next tick).
_URGENT = frozenset(
    t.value for t in (EventType.RUN_STARTED, EventType.EPOCH_END, EventType.STATUS, EventType.STAGE_END,
                      EventType.TRAINING_COMPLETE, EventType.TRAINING_FAILED, EventType.TRAINING_STOPPED)
)


class SessionEvents:
    """The event sink of a session's SSENotifier: ``put(event)`` hands the event to the writer thread."""

    def __init__(self, session: "RunSession") -> None:
        self.session = session

    def put(self, event: dict[str, Any]) -> None:
        writer = self.session.writer
        if writer is not None:
            writer.event(event, wake=event.get("type") in _URGENT)


class RunSession:
    """One run, as the callbacks of one process see it.

    ``run_dir``: the run directory (None for a lone JSONMetricLogger writing
    only ``metrics_path``). ``config``: the stack's TrackingConfig, when
    built by :func:`build_callbacks`. Written events fan out to the process's
    broker (:func:`~trackbridge.events.default_broker`), where an in-process
    server finds them. ``beats=False``: no heartbeat (a lone stop watcher).
    """

    def __init__(
        self,
        run_dir: RunDirectory | None,
        *,
        config: "TrackingConfig | None" = None,
        metrics_path: Path | None = None,
        heartbeat_interval_s: float | None = None,
        stale_after_s: float | None = None,
        beats: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.beats = beats and run_dir is not None
        self.config = config
        self.metrics_path = metrics_path or (run_dir.metrics_json if run_dir is not None else None)
        self.stale_after_s = stale_after_s or (config.stale_after_s if config else None) or default_stale_after_s()
        interval = heartbeat_interval_s or (config.heartbeat_interval_s if config else 15.0)
        # a reader calls a run dead after stale_after_s without a beat: beat well within it
        self.heartbeat_interval_s = min(interval, self.stale_after_s / 3)
        self.writes = True  # False on DDP ranks other than zero
        self.errors = TrackingErrors()
        self.events = SessionEvents(self)
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Everything that is per process and never pickled: threads, clocks, what this process did."""
        self.outage = DiskOutage(self.run_dir.run_id if self.run_dir is not None else str(self.metrics_path))
        self._writer: RecordWriter | None = None
        self.stop_requested = False
        self.owner_status: RunStatus | None = None  # RUNNING while this process trains the run
        self.in_train_steps = False  # Lightning's log_metrics calls now are step metrics
        self.step_keys: set[str] = set()
        self.last_epoch: int | None = None
        self._epoch_index: int | None = None
        self._epoch_started = 0.0
        self._record: dict[str, Any] | None = None
        self._stage: dict[str, Any] | None = None
        self._pipeline = _PipelineClock()
        self.last_step = 0
        #: The stack's MLflowMirror (set by it at setup), for the logger's run_id/experiment/log_params.
        self.mirror: Any = None
        #: The run's media recorder (set by it), for the logger's log_image/log_figure.
        self.media: Any = None
        #: Called with a ModelCheckpoint after Lightning saved a checkpoint (the logger's after_save_checkpoint).
        self.checkpoint_listeners: list[Callable[[Any], None]] = []

    def __getstate__(self) -> dict[str, Any]:
        # What identifies the run travels; threads, clocks and what this process did stay behind.
        return {name: self.__dict__[name] for name in _PICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.events = SessionEvents(self)
        self._init_runtime()

    @property
    def run_id(self) -> str | None:
        return self.run_dir.run_id if self.run_dir is not None else None

    # -- the writer ------------------------------------------------------------------
    @property
    def writer(self) -> RecordWriter | None:
        """The run's writer thread (started on first use); None where this process must not write."""
        if not self.writes or (self.run_dir is None and self.metrics_path is None):
            return None
        if self._writer is None:
            self._writer = RecordWriter(
                self.run_dir,
                broker=default_broker(),
                metrics_path=self.metrics_path,
                heartbeat_s=self.heartbeat_interval_s if self.beats else None,
                on_beat=self._on_beat,
                on_stop_request=self._on_stop_request,
                on_error=self.errors.writer_error,
                outage=self.outage,
            )
            self._writer.start()
            _OPEN_SESSIONS.add(self)
        return self._writer

    def flush(self, timeout: float = 10.0) -> bool:
        writer = self._writer
        return writer.flush(timeout) if writer is not None else True

    def close(self, timeout: float = 10.0) -> bool:
        """Detach from the run: write what is left and stop the writer (a later use starts a new one).

        Also done for every session when the interpreter exits.
        """
        writer = self._writer
        if writer is None:
            return True
        if self.run_dir is not None and self.owner_status is not None:
            writer.update_run(lambda record: record.update(attached=False))
        self._writer = None
        return writer.close(timeout)

    def setup(self, trainer: "pl.Trainer") -> None:
        """Learn this process's place in the run (idempotent): only global rank zero writes.

        In a DDP run launched as subprocesses every rank built a stack with a
        generated run id of its own; rank zero's is the run, so every rank
        adopts rank zero's run directory.
        """
        self.writes = trainer.is_global_zero
        if trainer.world_size > 1 and self.run_dir is not None:
            root, run_id = trainer.strategy.broadcast((str(self.run_dir.runs_root), self.run_dir.run_id), src=0)
            if (root, run_id) != (str(self.run_dir.runs_root), self.run_dir.run_id):
                self.run_dir = RunDirectory(root, run_id)
                self.metrics_path = self.run_dir.metrics_json

    def in_background(self, function: Callable[[], None]) -> None:
        """Run ``function`` in the writer thread (slow side work), or now where there is none."""
        writer = self.writer
        if writer is not None:
            writer.call(function)
        else:
            function()

    # -- the run's files ------------------------------------------------------------------
    def create_run(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create the run (``pending``), recording this process and its staleness limit; the heartbeat starts."""
        assert self.run_dir is not None
        record = self.run_dir.create(
            {
                **ProcessIdentity.current().as_fields(),
                "stale_after_s": self.stale_after_s,
                "heartbeat_interval_s": self.heartbeat_interval_s,
                **fields,
            }
        )
        self.writer  # noqa: B018 - starts the heartbeat: a pending run is alive while its process lives
        return record

    def update_run(self, change: Callable[[dict[str, Any]], None], *, wake: bool = True) -> None:
        writer = self.writer
        if writer is not None and self.run_dir is not None:
            writer.update_run(change, wake=wake)

    def start_training(self, trainer: "pl.Trainer") -> None:
        """This process now trains the run: it owns its status until it reports the end."""
        self.owner_status = RunStatus.RUNNING
        self.stop_requested = False
        writer = self.writer
        if writer is not None:
            writer.training = writer.beating = True
            writer.reset_stop_request()
        identity = ProcessIdentity.current().as_fields()
        max_epochs = trainer.max_epochs

        def running(record: dict[str, Any]) -> None:
            self._transition(record, RunStatus.RUNNING)
            record.update(identity, max_epochs=max_epochs, attached=True)

        self.update_run(running)

    def end_training(self, status: RunStatus, **fields: Any) -> None:
        """Report how training ended (the owner's last word on the status)."""
        self.owner_status = status
        if self._writer is not None:
            # The beat goes on while this process holds the run (``attached``): validate and test
            # stages may follow, and a stream stays open for them until the process lets go.
            self._writer.training = False

        def ended(record: dict[str, Any]) -> None:
            self._transition(record, status)
            record.update(fields, tracking_errors=self.errors.count)

        self.update_run(ended)

    def _transition(self, record: dict[str, Any], status: RunStatus) -> None:
        current = RunStatus(record.get("status", RunStatus.PENDING))
        if current.is_terminal and status is not RunStatus.RUNNING and self._closed_by_someone_else(current):
            self._recover(record)  # the owner wins: from a foreign terminal state back to running first
            current = RunStatus.RUNNING
        new = check_transition(current, status)
        now = utc_now_iso()
        if new is RunStatus.RUNNING:
            if record.get("started_at") is None:
                record["started_at"] = now
            elif current.is_terminal and record.get("recovered_at") != now:
                record["resumed_at"] = now
            record.update(completed_at=None, error=None, heartbeat_at=now)
        elif new.is_terminal:
            record["completed_at"] = now
        record["status"] = new.value

    def _closed_by_someone_else(self, current: RunStatus) -> bool:
        return self.owner_status is not None and current is not self.owner_status

    # -- owner wins -------------------------------------------------------------------
    def _on_beat(self, record: dict[str, Any]) -> None:
        if self.owner_status is RunStatus.RUNNING and record.get("status") != RunStatus.RUNNING.value:
            self._recover(record)

    def _recover(self, record: dict[str, Any]) -> None:
        """Restore ``running`` over a status someone else wrote while this process trains."""
        overruled, error = record.get("status"), record.get("error")
        now = utc_now_iso()
        record.update(status=RunStatus.RUNNING.value, completed_at=None, error=None, recovered_at=now)
        record.setdefault("recoveries", []).append({"at": now, "status": overruled, "error": error})
        announce(
            f"trackbridge: run {self.run_id} was marked {overruled} by another process while it is "
            f"training ({error}); restored to running — the training goes on"
        )
        self.events.put(
            make_event(0, EventType.STATUS, self.run_id, status=RunStatus.RUNNING.value, recovered=True,
                       overruled=overruled, error=error)
        )

    def _on_stop_request(self) -> None:
        self.stop_requested = True

    # -- the epoch clock and record (training thread) ----------------------------------------
    def epoch_started(self, trainer: "pl.Trainer") -> None:
        """Start the clock of the current epoch (idempotent: the first caller wins)."""
        if self._epoch_index != trainer.current_epoch:
            self._epoch_index = trainer.current_epoch
            self._epoch_started = time.monotonic()
            self._record = None
            self._pipeline.reset()

    def batch_started(self, batch: Any) -> None:
        self.in_train_steps = True
        self._pipeline.batch_started(batch)

    def batch_ended(self) -> None:
        self._pipeline.batch_ended()

    def epoch_record(self, trainer: "pl.Trainer") -> dict[str, Any] | None:
        """The record of the epoch that is ending, built on first call, then shared.

        None for an epoch the record already holds (a resumed run re-running
        an epoch its crash interrupted after the record was written:
        history is never rewritten, DESIGN §6).
        """
        index = trainer.current_epoch
        self.in_train_steps = False
        if self._record is not None and self._record["epoch"] == index + 1:
            return self._record
        if self._epoch_index != index:
            self.epoch_started(trainer)
        writer = self.writer
        if writer is not None and index + 1 <= writer.epoch_floor:
            return None
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k not in self.step_keys}
        record = build_epoch_record(
            epoch=index + 1,
            metrics=metrics,
            lr=current_lr(trainer),
            duration_s=time.monotonic() - self._epoch_started,
            time=utc_now(),
        )
        stamp = record.pop("time")  # "time" stays the last key, after the input-pipeline metrics
        record.update(self._pipeline.metrics())
        record["time"] = stamp
        self._record = record
        self.last_epoch = record["epoch"]
        return record

    def stage_started(self) -> None:
        """A validate/test stage (after fit, or alone) begins: its record will be built anew."""
        self._stage = None
        self.in_train_steps = False

    def stage_record(self, trainer: "pl.Trainer", stage: str) -> dict[str, Any]:
        """The record of the validate/test stage that just ended, built on first call, then shared.

        ``epoch`` is the fit's last epoch: MLflow gets the stage's metrics at that step (DESIGN §6).
        """
        if self._stage is None or self._stage["stage"] != stage:
            metrics = {k: as_float(v) for k, v in trainer.callback_metrics.items() if not k.endswith(STEP_SUFFIX)}
            floor = self._writer.epoch_floor if self._writer is not None else 0
            epoch = self.last_epoch or floor or trainer.current_epoch
            self._stage = {"stage": stage, "epoch": epoch, "metrics": metrics, "time": utc_now_iso()}
        return self._stage

    def outcome(self, exception: BaseException | None = None) -> tuple[RunStatus, str | None]:
        """How training ended: a stop request or Ctrl-C is ``stopped``, any other error ``failed``."""
        if exception is None:
            return (RunStatus.STOPPED if self.stop_requested else RunStatus.COMPLETED), None
        if isinstance(exception, KeyboardInterrupt):
            return RunStatus.STOPPED, None
        return RunStatus.FAILED, f"{type(exception).__name__}: {exception}"

    def final_metrics(self) -> dict[str, Any] | None:
        """The metrics of the last finished epoch, or None before the first one ends."""
        return metrics_of(self._record) if self._record is not None else None


# Sessions with a writer, closed at interpreter exit: a last chance to write a record kept in memory.
_OPEN_SESSIONS: "weakref.WeakSet[RunSession]" = weakref.WeakSet()


@atexit.register
def _close_open_sessions(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for session in list(_OPEN_SESSIONS):
        try:
            session.close(max(0.1, deadline - time.monotonic()))
        except Exception:  # the interpreter is going away: nothing more to do
            pass


_PICKLED = ("run_dir", "config", "metrics_path", "stale_after_s", "heartbeat_interval_s", "beats", "writes", "errors")


class StageHooks(pl.Callback):
    """A callback that records validate/test stages: ``record_stage(trainer, stage)`` at each one's end.

    A post-fit ``trainer.validate()`` and any ``trainer.test()``; the
    validation loops inside fit are the epochs' business, not a stage.
    """

    def record_stage(self, trainer: "pl.Trainer", stage: str) -> None:
        raise NotImplementedError

    @tracking_hook
    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.state.fn == "validate":
            self.record_stage(trainer, "validate")

    @tracking_hook
    def on_test_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.record_stage(trainer, "test")


class _PipelineClock:
    """Time waiting for batches vs time in the step, and samples per second (issue 13's input-pipeline metrics)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._last_end: float | None = None
        self._started: float | None = None
        self._epoch_start = time.perf_counter()
        self.data_wait = 0.0
        self.step = 0.0
        self.samples = 0
        self.batches = 0

    def batch_started(self, batch: Any) -> None:
        now = time.perf_counter()
        self.data_wait += now - (self._last_end if self._last_end is not None else self._epoch_start)
        self._started = now
        self.samples += batch_size(batch)
        self.batches += 1

    def batch_ended(self) -> None:
        now = time.perf_counter()
        if self._started is not None:
            self.step += now - self._started
            self._started = None
        self._last_end = now

    def metrics(self) -> dict[str, float]:
        if not self.batches:
            return {}
        busy = self.data_wait + self.step
        return {
            "time/data_wait_s": round(self.data_wait, 6),
            "time/step_s": round(self.step, 6),
            "throughput/samples_per_s": round(self.samples / busy, 3) if busy > 0 else 0.0,
        }


def batch_size(batch: Any) -> int:
    """The number of samples in ``batch`` (first tensor-like's first dimension); cheap, on the hot path."""
    for _ in range(4):  # (x, y), [x, y], {"image": x}, nested a little
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else 1
        if isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        elif isinstance(batch, Mapping) and batch:
            batch = next(iter(batch.values()))
        else:
            break
    return len(batch) if hasattr(batch, "__len__") else 1


def current_lr(trainer: "pl.Trainer") -> float | None:
    """The learning rate of the first optimizer's first param group."""
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, AttributeError, TypeError):
        return None


def metrics_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics part of a record: everything but ``epoch`` and ``time``."""
    return {k: v for k, v in record.items() if k not in ("epoch", "time")}


