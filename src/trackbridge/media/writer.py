"""MediaWriter: the one background thread of a run's media (hand over, write, notify).

The training thread only enqueues jobs (a key, a step, a function that draws); this thread
takes them in order, has each drawn and encoded by the run's render process (a
:class:`~trackbridge.media.drawer.Drawer`: the thread only pickles the job and unpickles
the PNG bytes; it draws itself only when the process cannot), writes each result through
the :class:`~trackbridge.record.media.MediaLog` and hands the media.jsonl entry to
``on_entry``. A job that raises is reported once per key and counted; nothing here ever
raises into training. A full queue drops the new job (with one warning) rather than
blocking the training thread; so does a spent byte budget.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..console import announce
from ..record.media import MediaLog
from .drawer import Drawer
from .jobs import MediaJob, Rendered

log = logging.getLogger("trackbridge")

MediaEntry = dict[str, Any]
EntryHook = Callable[[MediaEntry], None]
_STOP = object()
_PREPARE = object()


class ErrorSink(Protocol):
    """What counts failures and reports each kind once: the stack's ``TrackingErrors``
    (:class:`trackbridge.callbacks.guard.TrackingErrors`), so media failures count in
    ``run.json`` with the rest of the tracking errors."""

    count: int

    def record(self, where: str, what: str, exc: BaseException) -> None: ...


class MediaWriter:
    """Runs :class:`MediaJob` objects on one daemon thread, started on the first job.

    ``on_entry`` is called on that thread with each entry once its line is in media.jsonl;
    ``failures`` hears of every job that fails. ``render_process=False`` draws on the
    media thread itself. The thread, its queue, locks and render process are recreated
    after pickling (``ddp_spawn``).
    """

    def __init__(
        self,
        record: MediaLog,
        on_entry: EntryHook | None = None,
        *,
        failures: ErrorSink,
        max_pending: int = 64,
        render_process: bool = True,
    ) -> None:
        self.record = record
        self.on_entry = on_entry
        self.failures = failures
        self.max_pending = max_pending
        self.drawer = Drawer(in_process=render_process)
        self.written = 0
        self.submitted = 0  # jobs queued: with none, close() need not wait for the render process
        self.busy_s = 0.0  # wall time the media thread spent on jobs (waiting for the render process included)
        self.thread_cpu_s = 0.0  # CPU time of the media thread itself: what it may take from training (the GIL)
        self._dropped_warned = False
        self._full_warned = False
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.max_pending)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closing = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_queue", "_thread", "_start_lock", "_closing"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def submit(self, job: MediaJob) -> bool:
        """Queue ``job``; False (and one warning per run) when the queue is full or the budget spent."""
        if self.record.full:
            return False
        self._ensure_started()
        try:
            self._queue.put_nowait(job)
            self.submitted += 1
        except queue.Full:
            if not self._dropped_warned:
                self._dropped_warned = True
                announce(
                    f"the media thread is {self.max_pending} jobs behind; dropping {job.key!r} at step "
                    f"{job.step} (and later media while it stays behind)", log,
                )
            return False
        return True

    def prepare(self) -> None:
        """Start the render process in the background now, rather than with the first job."""
        if self.drawer.uses_process and not self.record.full:
            self._ensure_started()
            try:
                self._queue.put_nowait(_PREPARE)
            except queue.Full:
                pass  # jobs are waiting: the first of them starts it

    def flush(self, timeout: float) -> bool:
        """Wait until every job queued so far is done; False if ``timeout`` seconds pass first."""
        if self.submitted == 0 or self._thread is None or not self._thread.is_alive():
            return True  # no job queued: nothing to wait for (not even the render process's start)
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float) -> bool:
        """Finish the queued jobs (up to ``timeout`` seconds), stop the thread and the render process.

        With no job ever queued, the render process (prepared, perhaps still importing its
        libraries) is ended at once: a run without media never waits for it.
        """
        if self.submitted == 0:
            self._closing = True
            self.drawer.kill()
            finished = True
        else:
            finished = self.flush(timeout)
            if not finished:
                self.drawer.kill()  # the job in hand is abandoned: the thread stops waiting for it
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=max(timeout, 0.1))
            except queue.Full:
                self.drawer.close(0.0)
                return False
            thread.join(timeout if finished else 1.0)
        self._thread = None
        self._closing = False  # a later stage's media start the thread again
        self.drawer.close(timeout=5.0)
        return finished

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="trackbridge-media", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            if item is _PREPARE:
                if not self._closing:
                    self.drawer.prepare()
                continue
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                self._do(item)
            except Exception as exc:  # the last guard: this thread outlives any job
                self.failures.record("media", item.key, exc)
            self.busy_s += time.perf_counter() - start
            self.thread_cpu_s += time.thread_time() - cpu

    def _do(self, job: MediaJob) -> None:
        if self.record.full:
            return  # no drawing for media that would not be kept
        try:
            rendered = self.drawer.draw(job)
        except Exception as exc:  # a figure that raises never reaches training
            self.failures.record("media", job.key, exc)
            return
        for item in rendered:
            try:
                entry = self.record.add(
                    job.key,
                    step=job.step,
                    epoch=job.epoch,
                    kind=job.kind,
                    image=item.image.data,
                    width=item.image.width,
                    height=item.image.height,
                    image_format=item.image.image_format,
                    caption=item.caption,
                    data=item.data,
                )
            except (OSError, ValueError) as exc:  # a full disk, a value strict JSON refuses
                self.failures.record("media", job.key, exc)
                continue
            if entry is None:
                self._budget_spent(job)
                return
            self.written += 1
            if self.on_entry is not None:
                self.on_entry(entry)

    def _budget_spent(self, job: MediaJob) -> None:
        if self._full_warned:
            return
        self._full_warned = True
        record = self.record
        announce(
            f"media budget of {record.max_bytes / 2**20:.0f} MB reached ({record.bytes_used / 2**20:.1f} MB "
            f"written; {job.key!r} at step {job.step} did not fit): no more media is recorded for this run "
            "(raise media_max_bytes to keep more)", log,
        )
