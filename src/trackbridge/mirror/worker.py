"""MirrorWorker: the background thread that mirrors one live run into MLflow, never blocking its caller.

Public methods (any thread; each only puts a small item on a queue)::

    start()                          start the thread (the MLflow run is found or created lazily, off-thread)
    log_epoch(record)                an epoch record of metrics.json      → metrics at step = epoch
    log_step(line)                   a steps.jsonl line                   → metrics at step = global step
    log_system(line)                 a system.jsonl sample                → system/<name> at step = sample step
    log_stage(entry)                 a metrics.json stage (validate/test) → metrics at step = its last fit epoch
    log_media(entry)                 a media.jsonl entry (after it is written) → MLflow's images/ layout
    log_params(params)               any mapping, any time (log_hyperparams) → flattened params, new keys only
    log_inputs(datasets)             :mod:`.datasets` descriptors         → mlflow.log_inputs
    upload(relpath)                  a file of the run directory, latest wins (checkpoints, config.yaml)
    register(name, alias, cls)       register best.ckpt once the status is set
    end_run(status, end_ms, uploads, register, timeout, error)   the end, queued at once, then finish()
    finish(timeout)                  deliver what is queued within ``timeout`` s, then stop
    close(timeout) -> bool           wait for that; True only if everything reached MLflow

    mlflow_run_id, experiment_id, url, tracking_uri    None until connected
    wait_for_run_id(timeout) -> str | None              the one bounded wait, for a logger's run_id/experiment
    state (WorkerState), stats (MirrorStats), delivered, crashed

Entries must be written to the local record before they are handed over,
in the order they were written: the record is the source of truth, and the
worker reads it to replay what MLflow lacks. What the record holds when
:meth:`start` is called is history; on (first) connection the worker sends
the part of it past the cursor's watermarks (a resumed run's history,
anything a crash left), then what was handed over; nothing is taken twice.

How the thread works:

- work waits in one :class:`~.pending.Pending`, whose readiness rule says
  when to talk to MLflow (points after a short linger, so that one
  ``log_batch`` carries many; anything else at once);
- every MLflow call goes through the :class:`~.writer.RunWriter` and its
  failure comes back as one :class:`~.errors.MirrorFailure`, caught in one
  place (:meth:`MirrorWorker._attempt`): a refusal (4xx) drops what the
  request carried from the live queue, keeps it counted in run.json with
  MLflow's message (the cursor's watermark stays below it, so ``sync``
  sends it again) and says so once on the console; anything else is an
  outage: announced once per cause (HTTP status and MLflow error code, or
  the host), retried with backoff that honours ``Retry-After``;
- the cursor in run.json moves only past what MLflow accepted;
- at the end, the last points, images and uploads go out at once, then the
  status, within the deadline; what does not make it is left to sync.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from enum import Enum
from typing import Any, Callable, Mapping, Sequence

from ..record.clock import utc_now
from .cursor import Cursor, CursorBuffer
from .delivery import Delivery, Registrar, RunWriterLike, Stats
from .errors import MirrorFailure
from .intake import Intake, ParamBook
from .mapping import Stream
from .outage import Backoff, OutageLog, announce_to_console
from .pending import Close, Inputs, Media, Operation, Params, Pending, Record, Register, Status, Upload
from .writer import RunLink

log = logging.getLogger("trackbridge.mirror")

MirrorStats = Stats  # the name callers and tests know


class WorkerState(Enum):
    NEW = "new"  # not started
    CONNECTING = "connecting"  # no MLflow run yet
    UP = "up"
    DOWN = "down"  # in an outage, backing off
    FLUSHING = "flushing"  # delivering the rest before the deadline
    CLOSED = "closed"
    ABANDONED = "abandoned"  # the deadline passed inside an MLflow call
    CRASHED = "crashed"  # a bug in the mirror; the local record is complete


class MirrorWorker:
    """Mirror one local run into MLflow from a daemon thread; see the module docstring."""

    def __init__(
        self,
        writer: RunWriterLike,
        *,
        linger_s: float = 1.0,
        retry_first_s: float = 1.0,
        max_backoff_s: float = 30.0,
        cursor_interval_s: float = 2.0,
        flush_timeout_s: float = 30.0,
        announce: Callable[[str], None] | None = None,
        registrar: Registrar | None = None,
        context_tags: Callable[[], Mapping[str, str]] | None = None,
        mark_running: bool = True,
    ) -> None:
        self.writer = writer
        self.run_dir = writer.run_dir
        self.linger_s = linger_s
        self.default_timeout = flush_timeout_s
        self.cursor_interval_s = cursor_interval_s
        self.announce = announce or announce_to_console
        self.stats = Stats()
        self.crashed: BaseException | None = None
        self.ready = threading.Event()  # set after the first connection attempt, success or not
        self._context_tags = context_tags
        self._changes = CursorBuffer(Cursor(self.run_dir))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()  # set by items that should not wait for the linger
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # taking items off the queue vs. abandoning
        self._abandoned = False
        self._pending = Pending()
        self._pending.replay = True  # on connection: whatever the record holds past the cursor
        params = ParamBook(self._pending)
        self._intake = Intake(self.run_dir, self._pending, self._changes, params)
        self._delivery = Delivery(writer, self._pending, self._changes, params, self.stats, announce=self.announce,
                                  registrar=registrar, mark_running=mark_running)
        self._backoff = Backoff(retry_first_s, max_backoff_s)
        self._outages = OutageLog(writer.spec.tracking_uri, self.run_dir.run_id, self.announce)
        self._retry_at = 0.0
        self._last_failure: MirrorFailure | None = None
        self._finish_deadline: float | None = None  # set by finish(), on the caller's side
        self._deadline: float | None = None  # the same, once the worker has seen it
        self._flush_tries = 0

    # -- the caller's side (never blocks) --------------------------------------
    def start(self) -> None:
        """Start the thread; the record as it stands now is history, replayed from the files.

        Entries handed over from now on are new: steps.jsonl and system.jsonl
        lines take the next line index, in the order they come. Call it where
        nothing is being written to the record (the record writer's thread
        between two waves, or before training).
        """
        if self._thread is None:
            self._intake.start()
            self._thread = threading.Thread(target=self._main, name="trackbridge-mlflow", daemon=True)
            self._thread.start()

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._queue.put(Record(Stream.EPOCH, record))

    def log_step(self, line: Mapping[str, Any]) -> None:
        self._queue.put(Record(Stream.STEP, line))

    def log_system(self, line: Mapping[str, Any]) -> None:
        self._queue.put(Record(Stream.SYSTEM, line))

    def log_stage(self, entry: Mapping[str, Any]) -> None:
        self._queue.put(Record(Stream.STAGE, entry))
        self._wake.set()

    def log_media(self, entry: Mapping[str, Any]) -> None:
        self._put(Media(entry))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._put(Params(dict(params)))

    def log_inputs(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        self._put(Inputs(tuple(datasets)))

    def upload(self, relpath: str) -> None:
        """Upload ``run_dir/relpath`` to the same relative path in the MLflow run (latest wins)."""
        self._put(Upload(relpath))

    def set_status(self, status: str, end_ms: int | None = None, error: str | None = None) -> None:
        self._put(Status(status, end_ms, error))

    def register(self, name: str, alias: str, module_class: type | None = None) -> None:
        self._put(Register(name, alias, module_class))

    def _put(self, item: Any) -> None:
        self._queue.put(item)
        self._wake.set()

    def end_run(
        self, status: str | None, end_ms: int | None, uploads: Sequence[str],
        register: tuple[str, str, type | None] | None, timeout: float, error: str | None = None,
    ) -> None:
        """Queue the end of the run in one go (uploads, status, registration), then :meth:`finish`.

        One wake-up for all of it, so the worker sees the deadline before it
        starts and overlaps the requests. ``status`` None leaves MLflow's
        status as it is (a stage after fit).
        """
        for relpath in uploads:
            self._queue.put(Upload(relpath))
        if status is not None:
            self._queue.put(Status(status, end_ms, error))
        if register is not None:
            self._queue.put(Register(*register))
        self.finish(timeout)

    def finish(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout`` seconds from now, then stop; :meth:`close` waits."""
        if self._finish_deadline is None:
            self._finish_deadline = time.monotonic() + max(0.0, timeout)
            self._put(Close(self._finish_deadline))

    def close(self, timeout: float | None = None) -> bool:
        """Wait until the worker is done; True if everything reached MLflow.

        Asks :meth:`finish` first (with ``timeout``, else the flush timeout)
        if nobody has. Waits at most ``timeout`` seconds and never past the
        finish deadline: a worker still inside an MLflow call then is
        abandoned, and what did not make it stays in the cursor for
        ``trackbridge sync``.
        """
        if self._thread is None:
            return False
        self.finish(self.default_timeout if timeout is None else timeout)
        deadline = self._finish_deadline
        assert deadline is not None
        until = deadline if timeout is None else min(deadline, time.monotonic() + timeout)
        self._thread.join(max(0.0, until - time.monotonic()) + (0.5 if until == deadline else 0.0))
        if self._thread.is_alive():
            if time.monotonic() < deadline:
                return False  # still delivering, within its time
            self._abandon()
            return False
        return self.delivered

    # -- what callers may read -------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        return self.writer.spec.tracking_uri

    @property
    def link(self) -> RunLink | None:
        return self.writer.link

    @property
    def mlflow_run_id(self) -> str | None:
        return self.link.run_id if self.link else None

    @property
    def experiment_id(self) -> str | None:
        return self.link.experiment_id if self.link else None

    @property
    def url(self) -> str | None:
        return self.link.url if self.link else None

    def wait_for_run_id(self, timeout: float) -> str | None:
        """The MLflow run id, waiting at most ``timeout`` s for the first connection attempt."""
        self.ready.wait(timeout)
        return self.mlflow_run_id

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> WorkerState:
        if self.crashed is not None:
            return WorkerState.CRASHED
        if self._abandoned:
            return WorkerState.ABANDONED
        if self._thread is None:
            return WorkerState.NEW
        if not self._thread.is_alive():
            return WorkerState.CLOSED
        if self._deadline is not None:
            return WorkerState.FLUSHING
        if self._outages.down:
            return WorkerState.DOWN
        return WorkerState.UP if self.link is not None else WorkerState.CONNECTING

    @property
    def delivered(self) -> bool:
        """Everything handed over reached MLflow: connected, nothing pending, nothing refused, no crash."""
        return (self.crashed is None and not self._abandoned and self.link is not None
                and self._pending.empty and not self._delivery.refused)

    # -- the worker thread -------------------------------------------------------
    def _main(self) -> None:
        try:
            self._prepare()
            self._loop()
        except Exception as exc:  # a bug in the mirror: report it, never take training down
            self.crashed = exc
            log.exception(
                "the MLflow mirror of run %s stopped on an unexpected error; "
                "the local record is complete, `trackbridge sync %s` replays it",
                self.run_dir.run_id, self.run_dir.run_id,
            )
        finally:
            self.ready.set()

    def _prepare(self) -> None:
        """Before the first connection: MLflow's context tags, kept in the cursor for a later sync."""
        if self._context_tags is None:
            return
        tags = dict(self._context_tags())
        self.writer.spec = self.writer.spec._replace(tags={**tags, **self.writer.spec.tags})
        self._changes.set(context_tags=tags)

    def _loop(self) -> None:
        while True:
            self._take(self._wait_time())
            if self._abandoned:
                return
            if self._deadline is not None:
                if self._flush_over():
                    self._finish()
                    return
                wait = self._retry_at - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, max(0.0, self._deadline - time.monotonic())))
                    continue
                self._attempt()
                continue
            if self._due():
                self._attempt()
            self._write_cursor()

    def _flush_over(self) -> bool:
        assert self._deadline is not None
        now = time.monotonic()
        if self._finished() or now >= self._deadline or self._flush_tries <= 0:
            return True
        return self._retry_at > self._deadline  # the server asked to wait past the deadline

    def _wait_time(self) -> float | None:
        """How long to block on the queue before there is something to do."""
        if self._deadline is not None:
            return 0.0
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        if self.link is None:
            return 0.0
        wait = self._pending.wait_s(now, self.linger_s)
        if wait is None and self._changes.dirty:
            return self.cursor_interval_s
        return wait

    def _due(self) -> bool:
        now = time.monotonic()
        return now >= self._retry_at and (self.link is None or self._pending.due(now, self.linger_s))

    def _take(self, timeout: float | None) -> None:
        """Move queued items into pending work, after waiting up to ``timeout``.

        With nothing pending the thread sleeps until any item comes. Otherwise
        it sleeps until the linger or the backoff ends, and only urgent items
        (close, media, uploads, ...) wake it early: steps arriving at training
        speed then cost the training thread's GIL almost nothing.
        """
        first = []
        if self._pending.empty and not self._outages.down and self.link is not None:
            try:
                first = [self._queue.get(timeout=timeout)] if timeout != 0.0 else []
            except queue.Empty:
                pass
        elif timeout is None or timeout > 0:
            self._wake.wait(timeout)
        self._wake.clear()
        with self._lock:
            if self._abandoned:
                return
            for item in first:
                self._absorb(item)
            while True:
                try:
                    self._absorb(self._queue.get_nowait())
                except queue.Empty:
                    break

    def _absorb(self, item: Any) -> None:
        if isinstance(item, Close):
            self._deadline = item.deadline
            self._flush_tries = 1 if self._outages.down else 2
            if self._last_failure is None or self._last_failure.retry_after_s is None:
                self._retry_at = 0.0  # the flush tries at once, unless the server asked to wait
        else:
            self._intake.absorb(item)
            self.stats.entries_skipped = self._intake.skipped

    # -- talking to MLflow: the one place that catches its errors -------------
    def _attempt(self) -> None:
        """Do as much pending work as MLflow accepts now (see the module docstring)."""
        pending, delivery = self._pending, self._delivery

        def doing(operation: Operation) -> None:
            delivery.operation = operation

        try:
            doing(Operation.CONNECT)
            if self.link is None:
                try:
                    delivery.connect()
                finally:
                    self.ready.set()
                self._write_cursor(force=True)  # the MLflow link, for whoever reads run.json now
            doing(Operation.REPLAY)
            if pending.replay:
                delivery.replay()
            doing(Operation.PARAMS)
            if pending.params:
                delivery.send_params()
            doing(Operation.INPUTS)
            if pending.inputs is not None:
                delivery.send_inputs()
            if self._deadline is not None:
                delivery.final_wave()
            doing(Operation.POINTS)
            delivery.send_points()
            while (pending.media or pending.uploads) and not self._past_deadline():
                self._take(0.0)  # a close or fresh points may have come in meanwhile
                if self._deadline is not None:
                    delivery.final_wave()
                if pending.media:
                    doing(Operation.MEDIA)
                    delivery.send_media()
                elif pending.uploads:
                    doing(Operation.UPLOAD)
                    delivery.upload_next()
                doing(Operation.POINTS)
                delivery.send_points()  # points that came in during a long upload go first
            if pending.status is not None and not (pending.points or pending.media or pending.uploads):
                doing(Operation.STATUS)
                delivery.send_status(pending.status)
            if pending.register is not None and pending.status is None and not self._past_deadline():
                doing(Operation.REGISTER)
                delivery.register(pending.register)
        except MirrorFailure as failure:
            self._failed(delivery.operation, failure)
            return
        except Exception as exc:
            from .registry import RegistrationError

            if not isinstance(exc, RegistrationError):
                raise
            delivery.refuse(Operation.REGISTER, str(exc))
            return
        self._succeeded()

    # -- outcomes -----------------------------------------------------------
    def _failed(self, operation: Operation, failure: MirrorFailure) -> None:
        self.stats.failures += 1
        if failure.refused and operation is not Operation.CONNECT:
            self._delivery.refuse(operation, str(failure))
            return
        if self._deadline is not None:
            self._flush_tries -= 1
        self._last_failure = failure
        retry_in = self._backoff.delay(failure)
        self._retry_at = time.monotonic() + retry_in
        was_down = self._outages.down
        self._outages.failed(failure, retry_in)
        if not was_down:
            self.stats.outages += 1
            self._changes.set(outages=self.stats.outages)
        log.debug("MLflow %s failed: %s", operation.value, failure)

    def _succeeded(self) -> None:
        self._last_failure = None
        self._outages.recovered()
        self._backoff.reset()
        self._retry_at = 0.0

    # -- closing -------------------------------------------------------------
    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _finished(self) -> bool:
        return self.link is not None and self._pending.empty

    def _finish(self) -> None:
        """End of the flush: write the cursor, and say what was left for sync."""
        self._write_cursor(force=True)
        self.writer.cleanup()
        if not self._finished():
            self._announce_left()

    def _abandon(self) -> None:
        """The flush deadline passed while the worker was inside an MLflow call."""
        with self._lock:
            self._abandoned = True
            while True:  # items put after the worker last looked
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Upload):
                    self._pending.uploads.setdefault(item.relpath, None)
                elif isinstance(item, Register):
                    self._pending.register = item
            self._changes.add_pending(list(self._pending.uploads))
            if self._pending.register is not None:
                register = self._pending.register
                self._changes.set(registration_pending={"name": register.name, "alias": register.alias})
            self._changes.flush()
        self._announce_left()

    def _announce_left(self) -> None:
        left = self._pending.describe() if self.link is not None else "the run"
        self.announce(
            f"MLflow mirror of run {self.run_dir.run_id}: {left or 'some updates'} did not reach "
            f"{self.tracking_uri}; run `trackbridge sync {self.run_dir.run_id}` when it is reachable"
        )

    def _write_cursor(self, force: bool = False) -> None:
        if force or time.monotonic() - self._changes.written_at >= self.cursor_interval_s:
            with self._lock:  # not while an abandoning close writes its own
                if not self._abandoned:
                    self._changes.flush()
            self._changes.written_at = time.monotonic()


def end_ms_now() -> int:
    return int(utc_now().timestamp() * 1000)


__all__ = ["MirrorStats", "MirrorWorker", "Operation", "RunWriterLike", "WorkerState", "end_ms_now"]
