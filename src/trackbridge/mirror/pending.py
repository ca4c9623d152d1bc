"""The worker's work: what callers queue (items), what waits for MLflow (:class:`Pending`), and when it is due.

:class:`Pending` is the one object that holds undelivered work, and
:meth:`Pending.due` is the one place that says when the worker should talk
to MLflow: at once for anything but metric points; for points, once 1,000
are waiting (a full ``log_batch``) or the oldest has waited ``linger_s``, so
that one request carries many points.

It also keeps the streams' accounting (see :mod:`.mapping`): a point is
accepted only past the last mark accepted on its stream (so nothing is sent
twice, a resumed run's replay included), and once MLflow took a prefix of
the points, :meth:`Pending.delivered` says how far each stream's watermark
may move. A refused point pins its stream's watermark below it for good.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from enum import Enum
from typing import Any, Iterable, Mapping, NamedTuple

from .mapping import MAX_METRICS_PER_BATCH, Stream, Tracked


class Operation(Enum):
    """What the worker asks of MLflow, in the order one attempt does it."""

    CONNECT = "connect"  # find, adopt or create the MLflow run
    REPLAY = "replay"  # on connection: queue what the cursor says MLflow lacks (local reads only)
    PARAMS = "params"
    INPUTS = "inputs"
    POINTS = "points"
    MEDIA = "media"
    UPLOAD = "upload"
    STATUS = "status"
    REGISTER = "register"


# -- items: put on the queue by the caller's thread, turned into pending work by the worker's ---------
# (NamedTuples: immutable like frozen dataclasses, and a fraction of their import cost)
class Record(NamedTuple):
    """An epoch record, a steps.jsonl line, a system.jsonl sample or a metrics.json stage."""

    stream: Stream
    payload: Mapping[str, Any]


class Media(NamedTuple):
    entry: Mapping[str, Any]


class Params(NamedTuple):
    values: Mapping[str, Any]


class Inputs(NamedTuple):
    datasets: tuple[Mapping[str, Any], ...]


class Upload(NamedTuple):
    relpath: str


class Status(NamedTuple):
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    end_ms: int | None
    error: str | None = None  # run.json's error of a failed run, set as a tag


class Register(NamedTuple):
    name: str
    alias: str
    module_class: type | None


class Close(NamedTuple):
    deadline: float  # time.monotonic() by which the worker stops


class Pending:
    """Undelivered work and the streams' accounting; see the module docstring."""

    def __init__(self) -> None:
        self.points: deque[Tracked] = deque()
        self.points_since: float | None = None
        self.media: deque[tuple[int, Mapping[str, Any]]] = deque()
        self.uploads: dict[str, None] = {}
        self.params: dict[str, str] = {}
        self.inputs: tuple[Mapping[str, Any], ...] | None = None
        self.status: Status | None = None
        self.register: Register | None = None
        self.replay = False
        self._accepted: dict[Stream, int] = {}  # the highest mark taken on each stream
        self._first_live: dict[Stream, int] = {}  # the first mark taken live (a replay stops below it)
        self._floor: dict[Stream, int] = {}  # refused: the watermark may not pass this
        self._counts: Counter[tuple[Stream, int]] = Counter()

    # -- the readiness rule ----------------------------------------------------
    def urgent(self) -> bool:
        return bool(self.media or self.uploads or self.params or self.inputs is not None
                    or self.status is not None or self.register is not None or self.replay)

    def due(self, now: float, linger_s: float) -> bool:
        """Whether there is work for MLflow now (points: a full batch, or the oldest waited ``linger_s``)."""
        if self.urgent():
            return True
        if not self.points:
            return False
        return len(self.points) >= MAX_METRICS_PER_BATCH or now >= (self.points_since or now) + linger_s

    def wait_s(self, now: float, linger_s: float) -> float | None:
        """Seconds until :meth:`due` becomes true by itself; None: only a new item can make it."""
        if self.due(now, linger_s):
            return 0.0
        if self.points:
            return (self.points_since or now) + linger_s - now
        return None

    @property
    def empty(self) -> bool:
        return not (self.points or self.urgent())

    # -- taking work -------------------------------------------------------------
    def history(self, tops: Mapping[Stream, int | None]) -> None:
        """The record's last marks when the worker started: live entries at or below them are history.

        Such an entry is in the record already, and the replay sends it from
        there; a live copy (an epoch a resumed run re-runs, which the record
        writer does not record again: DESIGN §6's monotonic steps) is not sent.
        """
        for stream, top in tops.items():
            if top is not None:
                self._accepted[stream] = max(self._accepted.get(stream, -1), top)

    def accept(self, stream: Stream, mark: int) -> bool:
        """Take entry ``mark`` of ``stream`` live, unless a mark at or past it was taken (sent, or replayed)."""
        if mark <= self._accepted.get(stream, -1):
            return False
        self._accepted[stream] = mark
        self._first_live.setdefault(stream, mark)
        return True

    def add_points(self, items: Iterable[Tracked], now: float | None = None) -> None:
        items = list(items)
        if not items:
            return
        if self.points_since is None:
            self.points_since = time.monotonic() if now is None else now
        self.points.extend(items)
        self._counts.update((item.stream, item.mark) for item in items)

    def add_media(self, mark: int, entry: Mapping[str, Any]) -> None:
        self.media.append((mark, entry))

    def add_backlog(self, points: list[Tracked], media: list[tuple[int, Mapping[str, Any]]]) -> None:
        """A replay: older entries go first, minus anything already taken live."""
        def older(stream: Stream, mark: int) -> bool:
            return mark < self._first_live.get(stream, mark + 1)

        points = [p for p in points if older(p.stream, p.mark)]
        media = [(mark, entry) for mark, entry in media if older(Stream.MEDIA, mark)]
        self.points.extendleft(reversed(points))
        self._counts.update((item.stream, item.mark) for item in points)
        if points and self.points_since is None:
            self.points_since = time.monotonic()
        self.media.extendleft(reversed(media))
        for stream in Stream:
            marks = [p.mark for p in points if p.stream is stream] + (
                [m for m, _ in media] if stream is Stream.MEDIA else [])
            if marks:
                self._accepted[stream] = max(self._accepted.get(stream, -1), max(marks))

    def head(self) -> list[Tracked]:
        """The next batch of points, within MLflow's limits."""
        from .mapping import batches

        return next(batches(list(_take(self.points, MAX_METRICS_PER_BATCH))), [])

    # -- outcomes ------------------------------------------------------------
    def delivered(self, count: int) -> dict[Stream, int]:
        """The first ``count`` points reached MLflow: drop them; returns the watermarks they allow."""
        return self._pop(count, refused=False)

    def refused(self, count: int) -> dict[Stream, int]:
        """MLflow refused the first ``count`` points: drop them, pin their streams' watermarks below them."""
        return self._pop(count, refused=True)

    def _pop(self, count: int, refused: bool) -> dict[Stream, int]:
        last: dict[Stream, int] = {}
        for _ in range(count):
            item = self.points.popleft()
            self._counts[(item.stream, item.mark)] -= 1
            if refused:
                self._floor[item.stream] = min(self._floor.get(item.stream, item.mark - 1), item.mark - 1)
            last[item.stream] = item.mark
        if not self.points:
            self.points_since = None
        return {stream: self.limit(stream, mark - 1 if self._counts[(stream, mark)] > 0 else mark)
                for stream, mark in last.items()}

    def media_done(self, refused: bool = False) -> dict[Stream, int]:
        mark, _ = self.media.popleft()
        if refused:
            self._floor[Stream.MEDIA] = min(self._floor.get(Stream.MEDIA, mark - 1), mark - 1)
        return {Stream.MEDIA: self.limit(Stream.MEDIA, mark)}

    def limit(self, stream: Stream, mark: int) -> int:
        """``mark``, or lower when a refused entry of ``stream`` lies at or below it."""
        floor = self._floor.get(stream)
        return mark if floor is None else min(mark, floor)

    def describe(self) -> str:
        """What is left, in words, for the message that sends the user to ``trackbridge sync``."""
        parts = []
        if self.points:
            parts.append(f"{len(self.points)} metric points")
        if self.media:
            parts.append(f"{len(self.media)} images")
        if self.uploads:
            parts.append(", ".join(self.uploads))
        if self.params:
            parts.append(f"{len(self.params)} params")
        if self.inputs is not None:
            parts.append("the datasets")
        if self.status is not None:
            parts.append("the final status")
        if self.register is not None:
            parts.append(f"the registration of {self.register.name}")
        return "; ".join(parts)


def _take(items: deque[Tracked], count: int) -> Iterable[Tracked]:
    for index, item in enumerate(items):
        if index >= count:
            return
        yield item
