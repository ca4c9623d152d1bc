"""RecordWriter: the one thread that writes a run's local record while it trains (DESIGN §1).

The training thread only hands items over — a step's metrics, an epoch
record, an event, a change to run.json — by appending to a deque (well under
a microsecond) and, for what a reader waits for (an epoch's end, a status),
setting an event. This thread then writes them in waves, in the order the
record promises:

1. steps.jsonl lines (one append per wave), metrics.json (one atomic rewrite
   per wave that brought epochs or stages; each record serialized once, so a
   5,000-epoch file costs a join, not a re-encode), run.json (every change of
   the wave in one locked read-modify-write), then events.jsonl (one append);
   then metrics.json, run.json and events.jsonl are fsync'd — after the
   renames, so that a disk slow to sync (it flushes the checkpoints' data
   too) never keeps a finished epoch out of the files a kill leaves;
2. then the listeners (the MLflow mirror) get what was written — the mirror
   never sees what the local record does not hold;
3. the heartbeat, and a look for a stop request, at their own intervals.

A wave runs under :func:`~.gil.prompt_gil`: its some 40 system calls would
otherwise each wait up to 5 ms for the GIL next to a training thread busy in
Python.

A write that fails (a full disk, a file-size limit, a read-only or failing
device) never raises into the training: it is said once per outage on the
console, its data are kept in memory (bounded) and written again at the next
wave, and the writer says when the disk takes them again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping

from ..console import announce
from ..events.log import EventLog
from ..record.clock import iso_from_timestamp
from ..record.jsonio import dumps_strict, fsync_file, read_json, write_bytes_atomic
from ..record.jsonl import JsonlAppender, last_record
from ..record.run_dir import RunDirectory
from .gil import prompt_gil

log = logging.getLogger("trackbridge")

#: How long a wave may wait for steps and progress events to pile up (they wake nobody).
TICK_S = 0.1
#: At most this many unwritten step lines are kept while the disk refuses them (oldest dropped).
MAX_PENDING_STEP_LINES = 200_000
MAX_PENDING_EVENTS = 20_000
#: While records keep coming, a written file waits at most this long for its fsync.
MAX_UNSYNCED_S = 1.0

RunChange = Callable[[dict[str, Any]], None]
Listener = Callable[[Any], None]


class DiskOutage:
    """The writer's one outage at a time: said once when a write first fails, once when all write again."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.failing: dict[str, str] = {}  # what cannot be written -> why
        self.lost_lines = 0
        self._lock = threading.Lock()

    def failed(self, what: str, exc: OSError) -> None:
        why = f"{exc.strerror or type(exc).__name__}" + (f" [errno {exc.errno}]" if exc.errno else "")
        with self._lock:
            first = not self.failing
            self.failing[what] = why
        if first:
            announce(
                f"trackbridge: cannot write {what} of run {self.run_id} ({why}); the training goes on, "
                "the record is kept in memory and written again as soon as the disk takes it"
            )
        else:
            log.debug("cannot write %s of run %s: %s", what, self.run_id, why)

    def succeeded(self, what: str) -> None:
        with self._lock:
            if what not in self.failing:
                return
            del self.failing[what]
            recovered = not self.failing
        if recovered:
            lost = f" ({self.lost_lines} step lines were dropped meanwhile)" if self.lost_lines else ""
            announce(f"trackbridge: the record of run {self.run_id} is written again{lost}")

    @property
    def active(self) -> bool:
        return bool(self.failing)


class Item(str, Enum):
    """What the training side hands over; the value names the list of a wave it joins."""

    EPOCH = "epochs"
    STAGE = "stages"
    RUN = "run_changes"
    EVENT = "events"
    APPEND = "appends"
    CALL = "calls"
    FLUSH = "flushed"
    METRICS = "metrics"  # rewrite metrics.json even with nothing new (a fresh run's empty history)


@dataclass
class _Wave:
    """What one wave drained, sorted by where it goes."""

    step_lines: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    run_changes: list[RunChange] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    appends: list[tuple[str, Any, str | None]] = field(default_factory=list)  # (relpath, value, listener kind)
    calls: list[Callable[[], None]] = field(default_factory=list)
    flushed: list[threading.Event] = field(default_factory=list)


class RecordWriter:
    """Writes ``run_dir``'s record from a daemon thread (started by :meth:`start`).

    ``run_dir`` None: only ``metrics_path`` is written (a JSONMetricLogger
    used on its own, anywhere). ``heartbeat_s`` None: no heartbeat.
    ``broker``: the in-process fan-out the events go to after they are
    written. ``on_beat(record)`` edits run.json at every heartbeat (the
    session's owner-wins rule); ``on_stop_request()`` is called once a stop
    request file appears. ``listeners[kind]`` are called, in this thread,
    with what was written: ``"steps"`` (a list of step lines), ``"epoch"``,
    ``"stage"``, and the ``kind`` of :meth:`append` calls.
    """

    def __init__(
        self,
        run_dir: RunDirectory | None,
        *,
        metrics_path: Path | None = None,
        broker: Any = None,
        heartbeat_s: float | None = 15.0,
        on_beat: RunChange | None = None,
        on_stop_request: Callable[[], None] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        outage: DiskOutage | None = None,
    ) -> None:
        if run_dir is None and metrics_path is None:
            raise ValueError("a RecordWriter needs a run directory or a metrics path")
        self.run_dir = run_dir
        self.metrics_path = metrics_path or run_dir.metrics_json  # type: ignore[union-attr]
        self.folder = run_dir.path if run_dir is not None else self.metrics_path.parent
        self.name = run_dir.run_id if run_dir is not None else str(self.metrics_path)
        self.heartbeat_s = heartbeat_s
        self.on_beat = on_beat
        self.on_stop_request = on_stop_request
        self.on_error = on_error or (lambda what, exc: log.exception("trackbridge writer: %s failed", what))
        self.outage = outage or DiskOutage(self.name)
        self.listeners: dict[str, list[Listener]] = {}
        self.events = EventLog(self.folder / RunDirectory.EVENTS_JSONL, broker=broker)
        self.training = False  # while True, waves come every TICK_S and a stop request is looked for
        self.beating = heartbeat_s is not None  # the session stops the beat once training has ended
        self._steps: deque[tuple[int, float, Mapping[str, Any]]] = deque()
        self._items: deque[tuple[Item, Any]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._lock = threading.Lock()  # starting and closing the thread
        # the record as written
        self._appenders: dict[str, JsonlAppender] = {}
        self._epochs: list[dict[str, Any]] = []
        self._epoch_json: list[bytes] = []
        self._stages: list[dict[str, Any]] = []
        self._metrics_dirty = False
        self._unwritten_epochs: list[dict[str, Any]] = []
        self._unwritten_stages: list[dict[str, Any]] = []
        self._loaded = False
        self.step_floor: int | None = None  # a resumed run records steps only past this one
        self.epoch_floor = 0
        # kept while the disk refuses them
        self._pending_steps: list[str] = []
        self._pending_step_lines: list[dict[str, Any]] = []
        self._pending_events: list[dict[str, Any]] = []
        self._unsynced: list[Path] = []  # written since the last fsync
        self._synced_at = 0.0
        self._pending_run: list[RunChange] = []
        self._pending_appends: list[tuple[str, Any, str | None]] = []
        self._next_beat = 0.0
        self._stop_seen = False

    # -- the training thread's side (never blocks) ---------------------------------
    def step(self, step: int, wall_time: float, metrics: Mapping[str, Any]) -> None:
        """A step's metrics for steps.jsonl (written at the next wave; wakes nobody)."""
        self._steps.append((step, wall_time, metrics))

    def epoch(self, record: dict[str, Any]) -> None:
        self._put(Item.EPOCH, record, wake=True)

    def stage(self, record: dict[str, Any]) -> None:
        self._put(Item.STAGE, record, wake=True)

    def write_metrics(self) -> None:
        """Write metrics.json at the next wave even if nothing new came (a fresh run's empty history)."""
        self._put(Item.METRICS, None, wake=True)

    def event(self, event: dict[str, Any], *, wake: bool = True) -> None:
        self._put(Item.EVENT, event, wake=wake)

    def update_run(self, change: RunChange, *, wake: bool = True) -> None:
        """Apply ``change(record)`` to run.json in the next wave (with the other changes of the wave)."""
        self._put(Item.RUN, change, wake=wake)

    def append(self, relpath: str, value: Any, *, listener: str | None = None, wake: bool = False) -> None:
        """Append ``value`` as a line of the run's JSONL file ``relpath`` (e.g. system.jsonl)."""
        self._put(Item.APPEND, (relpath, value, listener), wake=wake)

    def call(self, function: Callable[[], None], *, wake: bool = False) -> None:
        """Run ``function`` in the writer thread at the end of the next wave (slow side work)."""
        self._put(Item.CALL, function, wake=wake)

    def subscribe(self, kind: str, listener: Listener) -> None:
        if listener not in self.listeners.setdefault(kind, []):
            self.listeners[kind].append(listener)

    def unsubscribe(self, kind: str, listener: Listener) -> None:
        if listener in self.listeners.get(kind, []):
            self.listeners[kind].remove(listener)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything handed over before this call was written (or tried); False on timeout."""
        if not self.alive:
            if self._closing:
                return False
            self.start()
        done = threading.Event()
        self._put(Item.FLUSH, done, wake=True)
        return done.wait(timeout)

    def _put(self, kind: Item, payload: Any, *, wake: bool) -> None:
        self._items.append((kind, payload))
        if wake:
            self._wake.set()

    # -- life of the thread ---------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Load what the run already holds (a resumed run), then start the thread (idempotent)."""
        with self._lock:
            if self.alive or self._closing:
                return
            self._load()
            self._thread = threading.Thread(target=self._main, name=f"trackbridge-record-{self.name}", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is left, then stop the thread; True if everything was written."""
        flushed = self.flush(timeout) if self.alive else True
        with self._lock:
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return flushed and not self.outage.active

    def _main(self) -> None:
        while True:
            self._wake.wait(self._wait_s())
            self._wake.clear()
            closing = self._closing
            try:
                with prompt_gil():  # a busy training thread must not stretch the wave (the kill guarantee)
                    self._wave()
            except Exception as exc:  # a bug in the writer: say so, keep writing what it can
                self.on_error("RecordWriter", exc)
            if closing:
                return

    def _wait_s(self) -> float | None:
        until_beat = max(0.0, self._next_beat - time.monotonic()) if self._beats() else None
        if self.training:
            return TICK_S if until_beat is None else min(TICK_S, until_beat)
        return until_beat

    # -- loading what a resumed run already holds -----------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            stored = read_json(self.metrics_path)
        except (OSError, ValueError):
            stored = {}
        epochs = stored.get("epochs") if isinstance(stored, dict) else None
        for record in epochs or []:
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                self._epochs.append(record)
                self._epoch_json.append(dumps_strict(record).encode("utf-8"))
        self._stages = [s for s in (stored.get("stages") or []) if isinstance(s, dict)] if isinstance(stored, dict) else []
        self.epoch_floor = max((r["epoch"] for r in self._epochs), default=0)
        if self.run_dir is not None:  # a resumed run must not keep a torn tail
            self._appender(RunDirectory.STEPS_JSONL).repair()
            self._appender(RunDirectory.EVENTS_JSONL).repair()
        # steps are recorded in increasing order, so the last line holds the last step
        last = last_record(self.folder / RunDirectory.STEPS_JSONL, lambda line: isinstance(line, dict) and isinstance(line.get("step"), int))
        self.step_floor = last["step"] if last is not None else None

    def _appender(self, relpath: str) -> JsonlAppender:
        appender = self._appenders.get(relpath)
        if appender is None:
            appender = self._appenders[relpath] = JsonlAppender(self.folder / relpath)
        return appender

    # -- one wave -------------------------------------------------------------------
    def _wave(self) -> None:
        wave = self._drain()
        wrote_steps = self._write_steps(wave.step_lines)
        epochs, stages = self._write_metrics(wave.epochs, wave.stages)
        self._write_run(wave.run_changes)
        self._write_events(wave.events)
        appended = self._write_appends(wave.appends)
        # Visible first (all a SIGKILL needs), durable second: an fsync can wait on the
        # disk for other files' data (the checkpoints), and must not delay the renames.
        self._sync_written(force=bool(wave.flushed) or self._closing)
        # the views follow the record: listeners get only what was written
        self._notify("steps", wrote_steps)
        for record in epochs:
            self._notify("epoch", record)
        for record in stages:
            self._notify("stage", record)
        for relpath, value, kind in appended:
            if kind:
                self._notify(kind, value)
        for function in wave.calls:
            self._run_safely("a deferred call", function)
        self._beat_if_due()
        self._look_for_stop_request()
        for done in wave.flushed:
            done.set()

    def _drain(self) -> _Wave:
        wave = _Wave()
        items = self._items
        while items:  # items first, then steps: a flush marker never overtakes the steps before it
            kind, payload = items.popleft()
            if kind is Item.METRICS:
                self._metrics_dirty = True
            else:
                getattr(wave, kind.value).append(payload)
        steps = self._steps
        floor = self.step_floor
        while steps:
            step, wall, metrics = steps.popleft()
            if floor is not None and step <= floor:
                continue  # monotonic steps: a resumed run re-runs these; the record keeps the first values
            wave.step_lines.append({"step": step, "time": iso_from_timestamp(wall), **metrics})
        return wave

    def _write_steps(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append this wave's step lines (and any kept from an outage); returns the lines written."""
        if not lines and not self._pending_steps:
            return []
        texts = self._pending_steps + [_dumps_line(line) for line in lines]
        written = self._pending_step_lines + lines
        try:
            self._appender("steps.jsonl").append_lines(texts)
        except OSError as exc:
            self._keep_pending_steps(texts, written)
            self.outage.failed("steps.jsonl", exc)
            return []
        self._pending_steps, self._pending_step_lines = [], []
        self.outage.succeeded("steps.jsonl")
        return written

    def _keep_pending_steps(self, texts: list[str], lines: list[dict[str, Any]]) -> None:
        overflow = len(texts) - MAX_PENDING_STEP_LINES
        if overflow > 0:
            self.outage.lost_lines += overflow
            texts, lines = texts[overflow:], lines[overflow:]
        self._pending_steps, self._pending_step_lines = texts, lines

    def _write_metrics(
        self, epochs: list[dict[str, Any]], stages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Rewrite metrics.json if anything new came; returns the epochs and stages now written for the first time."""
        for record in epochs:
            if record["epoch"] <= (self._epochs[-1]["epoch"] if self._epochs else 0):
                continue  # never rewrite history (DESIGN §6): the first record of an epoch stays
            self._epochs.append(record)
            self._epoch_json.append(dumps_strict(record).encode("utf-8"))
            self._unwritten_epochs.append(record)
        self._stages.extend(stages)
        self._unwritten_stages.extend(stages)
        if not (self._unwritten_epochs or self._unwritten_stages or self._metrics_dirty):
            return [], []
        try:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.metrics_path, self._metrics_bytes(), fsync=False)
            self._unsynced.append(self.metrics_path)
        except OSError as exc:
            self._metrics_dirty = True
            self.outage.failed("metrics.json", exc)
            return [], []
        self._metrics_dirty = False
        self.outage.succeeded("metrics.json")
        written = self._unwritten_epochs, self._unwritten_stages
        self._unwritten_epochs, self._unwritten_stages = [], []
        return written

    def _metrics_bytes(self) -> bytes:
        """metrics.json, one record a line; each record was serialized once, when it came."""
        parts = [b'{\n  "epochs": [']
        if self._epoch_json:
            parts += [b"\n    ", b",\n    ".join(self._epoch_json), b"\n  ]"]
        else:
            parts.append(b"]")
        if self._stages:
            stages = b",\n    ".join(dumps_strict(s).encode("utf-8") for s in self._stages)
            parts += [b',\n  "stages": [\n    ', stages, b"\n  ]"]
        parts.append(b"\n}\n")
        return b"".join(parts)

    def _write_run(self, changes: list[RunChange]) -> None:
        changes = self._pending_run + changes
        if not changes or self.run_dir is None:
            return

        def apply(record: dict[str, Any]) -> None:
            for change in changes:
                self._run_safely("a run.json change", change, record)

        try:
            self.run_dir.update_run(apply, fsync=False)
            self._unsynced.append(self.run_dir.run_json)
        except OSError as exc:
            self._pending_run = changes
            self.outage.failed("run.json", exc)
            return
        self._pending_run = []
        self.outage.succeeded("run.json")

    def _write_events(self, events: list[dict[str, Any]]) -> None:
        events = self._pending_events + events
        if not events:
            return
        try:
            self.events.put_many(events, fsync=False)
            self._unsynced.append(self.events.path)
        except OSError as exc:
            self._pending_events = events[-MAX_PENDING_EVENTS:]
            self.outage.failed("events.jsonl", exc)
            return
        self._pending_events = []
        self.outage.succeeded("events.jsonl")

    def _sync_written(self, force: bool) -> None:
        """fsync the files replaced or appended to since the last sync (steps and appends are never fsync'd).

        While more records already wait (the wake is set), they are written first and
        synced with these, at most :data:`MAX_UNSYNCED_S` later: a slow fsync must not
        hold the next epoch out of the files. A flush or the close always syncs.
        """
        if not self._unsynced:
            return
        if not force and self._wake.is_set() and time.monotonic() - self._synced_at < MAX_UNSYNCED_S:
            return
        for path in dict.fromkeys(self._unsynced):
            try:
                fsync_file(path)
            except OSError as exc:
                self.outage.failed(path.name, exc)
        self._unsynced = []
        self._synced_at = time.monotonic()

    def _write_appends(self, appends: list[tuple[str, Any, str | None]]) -> list[tuple[str, Any, str | None]]:
        appends = self._pending_appends + appends
        if not appends:
            return []
        by_file: dict[str, list[tuple[str, Any, str | None]]] = {}
        for item in appends:
            by_file.setdefault(item[0], []).append(item)
        written, kept = [], []
        for relpath, items in by_file.items():
            try:
                self._appender(relpath).append_lines([dumps_strict(value) for _, value, _ in items])
            except OSError as exc:
                kept += items[-MAX_PENDING_EVENTS:]
                self.outage.failed(relpath, exc)
                continue
            written += items
            self.outage.succeeded(relpath)
        self._pending_appends = kept
        return written

    def _notify(self, kind: str, value: Any) -> None:
        if kind == "steps" and not value:
            return
        for listener in list(self.listeners.get(kind, ())):
            self._run_safely(f"the {kind} listener", listener, value)

    def _run_safely(self, what: str, function: Callable[..., Any], *args: Any) -> None:
        try:
            function(*args)
        except Exception as exc:
            self.on_error(what, exc)

    # -- heartbeat and stop requests ----------------------------------------------------
    def _beat_if_due(self) -> None:
        now = time.monotonic()
        if not self._beats() or now < self._next_beat or self._pending_run:
            return
        self._next_beat = now + self.heartbeat_s  # type: ignore[operator]
        try:
            self.run_dir.update_run(self._beat)
        except OSError as exc:
            self.outage.failed("run.json (heartbeat)", exc)
            return
        self.outage.succeeded("run.json (heartbeat)")

    def _beats(self) -> bool:
        return self.beating and self.heartbeat_s is not None and self.run_dir is not None

    def _beat(self, record: dict[str, Any]) -> None:
        from ..record.clock import utc_now_iso

        record["heartbeat_at"] = utc_now_iso()
        if self.on_beat is not None:
            self.on_beat(record)

    def _look_for_stop_request(self) -> None:
        if not self.training or self._stop_seen or self.on_stop_request is None or self.run_dir is None:
            return
        if os.path.exists(self.run_dir.stop_request):
            self._stop_seen = True
            self.on_stop_request()

    def reset_stop_request(self) -> None:
        self._stop_seen = False


def _dumps_line(line: dict[str, Any]) -> str:
    try:
        return json.dumps(line, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError):  # NaN/Inf, or a value json does not know: the strict path
        return dumps_strict(line)
