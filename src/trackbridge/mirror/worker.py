"""MirrorWorker: the one background thread that owns every MLflow call of a run.

The training thread only puts small items on a queue (:meth:`MirrorWorker.log_epoch`,
:meth:`~MirrorWorker.log_step`, :meth:`~MirrorWorker.upload`, ...); it never
waits on the network. The worker:

- connects lazily (experiment, run, tags, params) and reconnects after outages;
- batches points into ``log_batch`` requests within MLflow's limits, after a
  short linger so that one request carries many points;
- uploads artifacts one at a time during training, latest wins: a path
  waiting for upload is read when its turn comes, so three best.ckpt changes
  during one upload cost one more upload, of the newest file;
- sets the MLflow status last, once every point and artifact before it is in;
- catches MLflow's errors in exactly one place, :meth:`MirrorWorker._attempt`:
  a refused request (4xx) drops what it carried and says so; anything else is
  an outage, announced once, retried with exponential backoff;
- keeps the cursor in run.json (:mod:`trackbridge.mirror.cursor`) up to date,
  so ``trackbridge sync`` knows what is left;
- at the end (:meth:`end_run`, :meth:`close`) sends the last points and every
  upload at once, then the status, within a deadline; the rest is left to sync.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from mlflow.entities import Metric, Param, RunTag

from ..record.clock import utc_now
from ..record.run_dir import RunDirectory
from .client import MLFLOW_ERRORS, create_run, ensure_experiment, find_run, is_rejection, make_client
from .cursor import Cursor, CursorBuffer
from ..mlflow_tags import ERROR_TAG, MAX_TAG_VALUE_LENGTH
from .mapping import Point, batches, epoch_points, iso_to_ms, param_batches, step_points
from .registry import RegistrationError
from .uri import mlflow_ui_url

log = logging.getLogger("trackbridge.mirror")

UPLOAD_DIR = ".mlflow-upload"  # hard-link snapshots of files being uploaded
UPLOAD_THREADS = 6  # concurrent requests in the final flush


# -- queue items -------------------------------------------------------------
@dataclass(frozen=True)
class _Epoch:
    record: Mapping[str, Any]


@dataclass(frozen=True)
class _Step:
    line: Mapping[str, Any]


@dataclass(frozen=True)
class _Upload:
    relpath: str


@dataclass(frozen=True)
class _Status:
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    end_ms: int | None
    error: str | None = None  # run.json's error of a failed run, set as a tag


@dataclass(frozen=True)
class _Register:
    name: str
    alias: str
    module_class: type | None


@dataclass(frozen=True)
class _Reconcile:
    epoch: int  # the resumed checkpoint's finished epochs
    step: int  # and its global step


@dataclass(frozen=True)
class _Close:
    deadline: float


@dataclass(frozen=True)
class _Pending:
    point: Point
    kind: str  # "epoch" or "step"
    mark: int  # the epoch or global step the point belongs to


@dataclass
class MirrorStats:
    """What the worker did; the callback reports it and tests read it."""

    points_sent: int = 0
    points_skipped: int = 0  # already in MLflow (a resumed run)
    points_rejected: int = 0
    requests: int = 0
    uploads: int = 0
    failures: int = 0
    outages: int = 0


class MirrorWorker:
    """Mirror one local run into MLflow from a daemon thread.

    ``run_fields`` are the parts of run.json that name the run in MLflow
    (read once by the caller); ``params`` and ``tags`` go to MLflow when the
    run is created. ``resume`` reuses the MLflow run of the cursor and skips
    every ``(key, step)`` MLflow already has.
    """

    def __init__(
        self,
        run_dir: RunDirectory,
        *,
        tracking_uri: str,
        experiment: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        start_ms: int | None = None,
        resume: bool = False,
        module_class: str | None = None,
        linger_s: float = 1.0,
        max_backoff_s: float = 30.0,
        cursor_interval_s: float = 2.0,
        flush_timeout_s: float = 30.0,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.params = dict(params)
        self.tags = dict(tags)
        self.start_ms = start_ms
        self.resume = resume
        self.module_class = module_class
        self.linger_s = linger_s
        self.max_backoff_s = max_backoff_s
        self.cursor_interval_s = cursor_interval_s
        self.announce = announce or announce_to_console
        self.stats = MirrorStats()
        self.crashed: BaseException | None = None
        self.mlflow_run_id: str | None = None
        self.experiment_id: str | None = None
        self.url: str | None = None
        self.ready = threading.Event()  # set after the first connection attempt, success or not

        self._cursor = Cursor(run_dir)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()  # set by items that should not wait for the linger
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # taking items off the queue vs. abandoning
        self._abandoned = False
        self._client: Any = None
        # pending work
        self._points: deque[_Pending] = deque()
        self._points_since: float | None = None
        self._uploads: dict[str, None] = {}
        self._status: _Status | None = None
        self._register: _Register | None = None
        self._reconcile: _Reconcile | None = None
        self._needs_reconcile = resume
        self._present: dict[str, set[int]] | None = None
        self._params_sent = False
        self._connect_failed = False
        # outage bookkeeping
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._refusals: set[str] = set()
        self._in_flight: str | None = None  # the upload a refusal is about
        self._operation = "connect"  # what the MLflow call in progress is doing
        # closing
        self.default_timeout = flush_timeout_s
        self._finish_deadline: float | None = None  # set by finish(), on the caller's side
        self._deadline: float | None = None  # the same, once the worker has seen it
        self._close_failures = 0
        self._close_tries = 2  # one try only when MLflow was already down as the flush began
        # cursor watermarks not yet written
        self._changes = CursorBuffer(self._cursor)

    # -- the training thread's side (never blocks) -------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="trackbridge-mlflow", daemon=True)
            self._thread.start()

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._queue.put(_Epoch(record))

    def log_step(self, line: Mapping[str, Any]) -> None:
        self._queue.put(_Step(line))

    def upload(self, relpath: str) -> None:
        """Upload ``run_dir/relpath`` to the same relative path in the MLflow run (latest wins)."""
        self._put(_Upload(relpath))

    def set_status(self, status: str, end_ms: int | None = None) -> None:
        self._put(_Status(status, end_ms))

    def register(self, name: str, alias: str, module_class: type | None = None) -> None:
        self._put(_Register(name, alias, module_class))

    def reconcile(self, epoch: int, step: int) -> None:
        """For a resumed run: replay the local record up to the checkpoint, learn what MLflow has."""
        self._put(_Reconcile(epoch, step))

    def _put(self, item: Any) -> None:
        self._queue.put(item)
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def end_run(
        self, status: str, end_ms: int | None, uploads: list[str], register: tuple[str, str, type | None] | None,
        timeout: float, error: str | None = None,
    ) -> None:
        """Queue the end of the run in one go (uploads, status, registration), then :meth:`finish`.

        One wake-up for all of it, so the worker sees the deadline before it
        starts and overlaps the requests.
        """
        for relpath in uploads:
            self._queue.put(_Upload(relpath))
        self._queue.put(_Status(status, end_ms, error))
        if register is not None:
            self._queue.put(_Register(*register))
        self.finish(timeout)

    def finish(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout`` seconds from now, then stop; :meth:`close` waits."""
        if self._finish_deadline is None:
            self._finish_deadline = time.monotonic() + max(0.0, timeout)
            self._put(_Close(self._finish_deadline))

    def close(self, timeout: float | None = None) -> bool:
        """Wait until the worker is done; True if everything reached MLflow.

        Asks :meth:`finish` first (with ``timeout``, else the flush timeout)
        if nobody has. Waits at most ``timeout`` seconds and never past the
        finish deadline: a worker still inside an MLflow call then is
        abandoned, and what did not make it stays pending in the cursor for
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
        return self._done()

    # -- the worker thread ---------------------------------------------------
    def _main(self) -> None:
        try:
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

    def _loop(self) -> None:
        while True:
            self._take(self._wait_time())
            if self._abandoned:
                return
            if self._deadline is not None:
                if self._done() or time.monotonic() >= self._deadline or self._close_failures >= self._close_tries:
                    self._finish()
                    return
                self._attempt()
                if 0 < self._close_failures < self._close_tries:
                    time.sleep(min(0.5, max(0.0, self._deadline - time.monotonic())))
                continue
            if self._due():
                self._attempt()
            self._write_cursor()

    def _wait_time(self) -> float | None:
        """How long to block on the queue before there is something to do."""
        if self._deadline is not None:
            return 0.0
        now = time.monotonic()
        if self._down_since is not None or now < self._retry_at:
            return max(0.0, self._retry_at - now)
        if self._needs_connect() or self._uploads or self._status or self._register or self._reconcile:
            return 0.0
        if self._points and not self._waiting_for_reconcile():
            return max(0.0, (self._points_since or now) + self.linger_s - now)
        if self._changes.dirty:
            return self.cursor_interval_s
        return None

    def _due(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        if self._needs_connect() or self._uploads or self._status or self._register or self._reconcile:
            return True
        if self._points and not self._waiting_for_reconcile():
            return len(self._points) >= 1000 or now >= (self._points_since or now) + self.linger_s
        return False

    def _needs_connect(self) -> bool:
        return self.mlflow_run_id is None

    def _waiting_for_reconcile(self) -> bool:
        return self._needs_reconcile and self._reconcile is None

    def _take(self, timeout: float | None) -> None:
        """Move queued items into the pending state, after waiting up to ``timeout``.

        With nothing pending the thread sleeps until any item comes. Otherwise
        it sleeps until the linger or the backoff ends, and only urgent items
        (close, status, uploads) wake it early: steps arriving at training
        speed then cost the training thread's GIL almost nothing.
        """
        first = []
        if not self._points and self._down_since is None:  # idle: any item is news
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
        if isinstance(item, _Epoch):
            mark = int(item.record["epoch"])
            self._add_points(epoch_points(item.record), "epoch", mark)
        elif isinstance(item, _Step):
            self._add_points(step_points(item.line), "step", int(item.line["step"]))
        elif isinstance(item, _Upload):
            if item.relpath not in self._uploads:
                self._uploads[item.relpath] = None
                self._changes.add_pending([item.relpath])
        elif isinstance(item, _Status):
            self._status = item
        elif isinstance(item, _Register):
            self._register = item
            self._changes.set(registration_pending={"name": item.name, "alias": item.alias})
        elif isinstance(item, _Reconcile):
            self._reconcile = item
        elif isinstance(item, _Close):
            self._deadline = item.deadline
            self._close_tries = 1 if self._down_since is not None else 2
            if self._waiting_for_reconcile():  # training ended before it started: nothing to replay
                self._needs_reconcile = False

    def _add_points(self, points: list[Point], kind: str, mark: int) -> None:
        if not points:
            self._changes.mark(kind, mark)
            return
        if self._points_since is None:
            self._points_since = time.monotonic()
        self._points.extend(_Pending(point, kind, mark) for point in points)

    # -- talking to MLflow: the one place that catches its errors -------------
    def _attempt(self) -> None:
        """Do as much pending work as MLflow accepts now.

        This is the single place where MLflow errors are caught (see the
        module docstring): a refusal drops the operation that caused it; any
        other error starts (or continues) an outage and schedules a retry.
        """
        try:
            self._operation = "connect"
            if self._needs_connect():
                self._connect()
            self._operation = "params"
            if not self._params_sent:
                self._send_params()
            self._operation = "reconcile"
            if self._reconcile is not None:
                self._do_reconcile(self._reconcile)
            if self._needs_reconcile:
                return  # points of a resumed run wait until MLflow's history is known
            if self._deadline is not None:
                self._final_wave()
            self._operation = "points"
            self._send_points()
            while self._uploads and not self._past_deadline():
                self._take(0.0)  # a close or fresh points may have come in meanwhile
                if self._deadline is not None:
                    self._final_wave()
                    if not self._uploads:
                        break
                self._operation = "upload"
                self._upload_next()
                self._operation = "points"
                self._send_points()  # points that came in during a long upload go first
            if self._status is not None and not self._points and not self._uploads:
                self._operation = "status"
                self._send_status(self._status)
            if self._register is not None and self._status is None and not self._past_deadline():
                self._operation = "register"
                self._do_register(self._register)
        except MLFLOW_ERRORS + (RegistrationError,) as exc:
            self.stats.failures += 1
            if isinstance(exc, RegistrationError) or (is_rejection(exc) and self._operation != "connect"):
                self._refused(self._operation, exc)
            else:
                self._outage(self._operation, exc)
            return
        self._recovered()

    def _connect(self) -> None:
        if self._client is None:
            self._client = make_client(self.tracking_uri)
        client = self._client
        try:
            experiment_id = ensure_experiment(client, self.experiment, self.tracking_uri)
            cursor = self._cursor.read()
            known = cursor["run_id"] if cursor["tracking_uri"] == self.tracking_uri else None
            run = None
            if known or self.resume or self._connect_failed:
                # a lost answer to an earlier create_run may have created it already
                run = find_run(client, known, experiment_id, self.run_dir.run_id)
            if run is None:
                run = create_run(client, experiment_id, self.run_dir.run_id, self.start_ms, self.tags)
            else:
                self._params_sent = bool(cursor["params_mirrored"]) and cursor["run_id"] == run.info.run_id
                client.update_run(run.info.run_id, status="RUNNING")
                client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in self.tags.items()])
        except MLFLOW_ERRORS:
            self._connect_failed = True
            self.ready.set()
            raise
        run_id = run.info.run_id
        self.experiment_id = experiment_id
        self.url = mlflow_ui_url(self.tracking_uri, experiment_id, run_id)
        self.mlflow_run_id = run_id
        self.ready.set()
        self._changes.set(
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            experiment_id=experiment_id,
            run_id=run_id,
            url=self.url,
            params_mirrored=self._params_sent,
            status_mirrored="RUNNING",
            module_class=self.module_class,
        )
        self._write_cursor(force=True)  # the MLflow link, for whoever reads run.json now

    def _send_params(self) -> None:
        for batch in param_batches(self.params):
            self._client.log_batch(self.mlflow_run_id, params=[Param(k, v) for k, v in batch])
        self._params_sent = True
        self._changes.set(params_mirrored=True)

    def _do_reconcile(self, item: _Reconcile) -> None:
        """Replay a resumed run's record up to its checkpoint; remember every (key, step) MLflow has."""
        from .sync import local_points, present_steps

        local = [
            p for p in local_points(self.run_dir, max_epoch=item.epoch, max_step=item.step)
        ]
        run = self._client.get_run(self.mlflow_run_id)
        keys = {p.key for p in local} | set(run.data.metrics)
        present = present_steps(self._client, self.mlflow_run_id, keys)
        missing = [p for p in local if p.step not in present.get(p.key, ())]
        for point in missing:
            present.setdefault(point.key, set()).add(point.step)
        self._present = present
        self._reconcile = None
        self._needs_reconcile = False
        # replayed points go first, marked so they do not move the watermarks
        self._points.extendleft(_Pending(p, "replay", -1) for p in reversed(missing))
        if self._points and self._points_since is None:
            self._points_since = time.monotonic()
        self._changes.mark("epoch", item.epoch)
        self._changes.mark("step", item.step)

    def _send_points(self) -> None:
        if self._present is not None:
            self._skip_present()
        while self._points:
            batch = next(batches([p.point for p in self._points]))
            self._log_points(batch)
            self._points_sent(len(batch))

    def _log_points(self, batch: list[Point]) -> None:
        self._client.log_batch(
            self.mlflow_run_id, metrics=[Metric(p.key, p.value, p.timestamp, p.step) for p in batch]
        )

    def _points_sent(self, count: int) -> None:
        self.stats.requests += 1
        self.stats.points_sent += count
        self._pop_points(count)

    def _skip_present(self) -> None:
        kept: deque[_Pending] = deque()
        skipped: set[tuple[str, int]] = set()
        for item in self._points:
            steps = self._present.get(item.point.key)  # type: ignore[union-attr]
            if item.kind != "replay" and steps is not None and item.point.step in steps:
                self.stats.points_skipped += 1
                skipped.add((item.kind, item.mark))
            else:
                kept.append(item)
        self._points = kept
        still = {(item.kind, item.mark) for item in kept}
        for kind, mark in skipped:
            self._changes.mark(kind, mark if (kind, mark) not in still else mark - 1)

    def _pop_points(self, count: int) -> None:
        for _ in range(count):
            self._note_mark(self._points.popleft())
        if not self._points:
            self._points_since = None

    def _note_mark(self, item: _Pending) -> None:
        """Advance a watermark unless more points of the same epoch/step are still pending."""
        if item.kind == "replay":
            return
        mark = item.mark if not self._has_pending(item.kind, item.mark) else item.mark - 1
        self._changes.mark(item.kind, mark)

    def _has_pending(self, kind: str, mark: int) -> bool:
        return bool(self._points) and self._points[0].kind == kind and self._points[0].mark == mark

    def _upload_next(self) -> None:
        relpath = self._in_flight = next(iter(self._uploads))
        self._upload_one(relpath)
        self._uploaded([relpath])

    def _final_wave(self) -> None:
        """The flush training waits for: the last points and every upload, all at once.

        Their round trips overlap (the status follows, alone) in a small
        thread pool; should one of the requests fail, what succeeded is kept
        and the error goes to :meth:`_attempt` like any other.
        """
        head = next(batches([p.point for p in self._points]), None)
        paths = list(self._uploads)
        if (head is not None) + len(paths) < 2:
            return  # nothing to overlap: the sequential path does it
        try:
            with ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="trackbridge-upload") as pool:
                points = pool.submit(self._log_points, head) if head is not None else None
                uploads = {path: pool.submit(self._upload_one, path) for path in paths}
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return
        if points is not None and points.exception() is None:
            self._points_sent(len(head))
        self._uploaded([path for path, f in uploads.items() if f.exception() is None])
        if points is not None and points.exception() is not None:
            self._operation = "points"
            raise points.exception()
        for path, future in uploads.items():
            if future.exception() is not None:
                self._operation, self._in_flight = "upload", path
                raise future.exception()

    def _upload_one(self, relpath: str) -> None:
        source = self.run_dir.path / relpath
        if not source.is_file():
            return  # gone since it was queued (nothing to mirror)
        snapshot = _snapshot(self.run_dir.path, relpath)
        try:
            self._client.log_artifact(self.mlflow_run_id, str(snapshot), os.path.dirname(relpath) or None)
        finally:
            snapshot.unlink(missing_ok=True)

    def _uploaded(self, paths: list[str]) -> None:
        for path in paths:
            del self._uploads[path]
        self.stats.uploads += len(paths)
        self._changes.remove_pending(paths)

    def _send_status(self, item: _Status) -> None:
        if item.error:
            self._client.set_tag(self.mlflow_run_id, ERROR_TAG, item.error[:MAX_TAG_VALUE_LENGTH])
        self._client.set_terminated(self.mlflow_run_id, status=item.status, end_time=item.end_ms)
        self._status = None
        self._changes.set(status_mirrored=item.status)

    def _do_register(self, item: _Register) -> None:
        from .registry import register_checkpoint, registration_summary

        result = register_checkpoint(
            self._client, self.run_dir, self.mlflow_run_id, item.name, item.alias,
            module_class=item.module_class,
        )
        self._register = None
        self._changes.set(registration_pending=None, registered=registration_summary(result))
        log.info(
            "registered %s version %s (%s)%s",
            result["name"], result["version"], result["model_uri"],
            f"; alias @{item.alias} now points to it" if result["alias_moved"] else "",
        )

    # -- outcomes -----------------------------------------------------------
    def _outage(self, operation: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self._deadline is not None:
            self._close_failures += 1
        if self._down_since is None:
            self._down_since = now
            self._backoff = 1.0
            self.stats.outages += 1
            self._changes.set(outages=self.stats.outages)
            self.announce(
                f"MLflow at {self.tracking_uri} is unreachable ({_short(exc)}); training goes on, "
                f"run {self.run_dir.run_id} is kept locally and retried in the background "
                f"(`trackbridge sync {self.run_dir.run_id}` replays anything left)"
            )
        else:
            self._backoff = min(self._backoff * 2, self.max_backoff_s)
        log.debug("MLflow %s failed: %s", operation, exc)
        self._retry_at = now + self._backoff

    def _recovered(self) -> None:
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since = None
            self._backoff = 1.0
            self.announce(
                f"MLflow at {self.tracking_uri} is reachable again after {down:.0f} s; "
                f"run {self.run_dir.run_id} caught up"
            )
        self._retry_at = 0.0

    def _refused(self, operation: str, exc: BaseException) -> None:
        """MLflow answered "no": drop what the request carried, say so once per kind."""
        if operation == "points":
            batch = next(batches([p.point for p in self._points]))
            self.stats.points_rejected += len(batch)
            self._pop_points(len(batch))
        elif operation == "upload":
            self._uploads.pop(self._in_flight, None)  # stays pending in the cursor, for sync
        elif operation == "status":
            self._status = None
        elif operation == "register":
            self._register = None
        elif operation == "params":
            self._params_sent = True  # sync retries them; points must not wait on them
        elif operation == "reconcile":
            self._reconcile = None
            self._needs_reconcile = False
        if operation not in self._refusals:
            self._refusals.add(operation)
            self.announce(f"MLflow refused the {operation} of run {self.run_dir.run_id}: {_short(exc)}")

    # -- closing -------------------------------------------------------------
    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _done(self) -> bool:
        return not (
            self._points or self._uploads or self._status or self._register
            or self._needs_connect() or self._needs_reconcile
        )

    def _finish(self) -> None:
        """End of the flush: write the cursor, and say what was left for sync."""
        self._write_cursor(force=True)
        shutil.rmtree(self.run_dir.path / UPLOAD_DIR, ignore_errors=True)
        if not self._done():
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
                if isinstance(item, _Upload):
                    self._uploads.setdefault(item.relpath, None)
                elif isinstance(item, _Register):
                    self._register = item
            self._changes.add_pending(list(self._uploads))
            if self._register is not None:
                self._changes.set(
                    registration_pending={"name": self._register.name, "alias": self._register.alias}
                )
            self._changes.flush()
        self._announce_left()

    def _announce_left(self) -> None:
        parts = []
        if self._points:
            parts.append(f"{len(self._points)} metric points")
        if self._uploads:
            parts.append(", ".join(self._uploads))
        if self._status is not None or self._needs_connect():
            parts.append("the final status")
        if self._register is not None:
            parts.append(f"the registration of {self._register.name}")
        self.announce(
            f"MLflow mirror of run {self.run_dir.run_id}: {'; '.join(parts) or 'some updates'} "
            f"did not reach {self.tracking_uri}; run `trackbridge sync {self.run_dir.run_id}` "
            "when it is reachable"
        )

    def _write_cursor(self, force: bool = False) -> None:
        if force or time.monotonic() - self._changes.written_at >= self.cursor_interval_s:
            with self._lock:  # not while an abandoning close writes its own
                if not self._abandoned:
                    self._changes.flush()
            self._changes.written_at = time.monotonic()


def _snapshot(root: Path, relpath: str) -> Path:
    """A hard link to ``root/relpath`` that a later atomic rewrite of the file cannot change."""
    source = root / relpath
    snapshot = root / UPLOAD_DIR / relpath
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.unlink(missing_ok=True)
    try:
        os.link(source, snapshot)
    except OSError:  # no hard links here (another filesystem): copy instead
        shutil.copy2(source, snapshot)
    return snapshot


def _short(exc: BaseException) -> str:
    """One line about an MLflow error: the cause people recognise, not urllib3's retry story."""
    text = str(exc).strip()
    for needle, said in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "unknown host"), ("RemoteDisconnected", "connection dropped"),
                         ("Connection reset", "connection reset"), ("Connection aborted", "connection aborted")):
        if needle in text:
            return said
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 160 else text[:160] + "..."


def announce_to_console(message: str) -> None:
    """Log ``message`` (training.log gets it) and make sure the console shows it too.

    While a run is tracked, the root logger's only handler is training.log's
    file, so a warning would not reach the terminal on its own.
    """
    log.warning("%s", message)
    if not _console_handled(log):
        print(f"trackbridge: {message}", file=sys.stderr, flush=True)


def _console_handled(logger: logging.Logger) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
                    return True
        current = current.parent if current.propagate else None
    return False


def end_ms_now() -> int:
    return int(utc_now().timestamp() * 1000)


__all__ = ["MirrorStats", "MirrorWorker", "announce_to_console", "iso_to_ms"]
