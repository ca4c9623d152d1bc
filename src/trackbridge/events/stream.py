"""One reader's view of a run's events: a state machine free of I/O, and its blocking driver.

:class:`StreamState` decides, like h11's connection state, what a reader
sends and when it must read the durable log; it never reads, waits or
writes itself. Every transport drives the same state:

- :class:`EventStream` (here): a blocking iterator for a thread per reader
  (the Flask blueprint: WSGI servers and flask-sock);
- :class:`~trackbridge.events.fanout.AsyncEventStream`: asyncio readers fed
  by one pass over all readers of a run (the ASGI app).

So every transport sends the same events in the same order.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any, Iterable, Iterator

from .hub import EventHub, SourceFactory
from .types import TERMINAL_EVENT_TYPES, EventType

log = logging.getLogger(__name__)


#: How often a stream held open after its run's terminal event looks whether the run's process let it go.
HOLD_CHECK_S = 1.0


class Phase(str, Enum):
    LIVE = "live"  # following the run
    ENDING = "ending"  # the last event sent is terminal: the log must confirm nothing follows it
    DONE = "done"  # nothing more will be sent


class StreamState:
    """Which events of a run a reader has sent, and what it must do next.

    Ids are gapless per run (DESIGN §4). Events from the durable log are
    taken as they are; a *live* event whose id skips one means the feed lost
    something (a full buffer, a failed watcher): the reader is then
    :attr:`behind` and must read the log after :attr:`last_id`. After a
    terminal event the phase is ENDING: the log is read once more, and the
    stream ends only if nothing follows (a resumed or restored run writes on
    after its terminal event, and the stream goes on with it).
    """

    def __init__(self, after_id: int = 0) -> None:
        if after_id < 0:
            raise ValueError(f"`after_id` must be >= 0, got {after_id}")
        self.last_id = after_id
        self.phase = Phase.LIVE
        self.behind = False
        #: After the terminal event, the run's process still holds the run (validate/test may follow):
        #: wait for live events, and look at the log again at the next tick.
        self.held = False

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def needs_read(self) -> bool:
        """Whether the driver must read the log (after ``last_id``) before waiting for live events."""
        return not self.done and (self.behind or (self.phase is Phase.ENDING and not self.held))

    def start(self, history: list[dict[str, Any]], tail: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The events to send first: ``history`` (the log after ``after_id``); ``tail`` the log's last event.

        A client that already has a finished run's terminal event gets nothing.
        """
        if not history and tail is not None and tail["id"] <= self.last_id and _is_terminal(tail):
            self.phase = Phase.DONE
            return []
        return self.from_log(history)

    def from_log(self, events: Iterable[dict[str, Any]], *, attached: bool = False) -> list[dict[str, Any]]:
        """Events read from the durable log after ``last_id``: what to send now.

        ``attached``: the run's process still holds the run, so after its
        terminal event more may come (the stages of a ``trainer.test()`` after
        fit): the stream then stays open, and checks again at the next tick.
        """
        ending = self.phase is Phase.ENDING
        out = self._accept(events, check_gaps=False)
        self.behind = False
        if ending and not out:
            if attached:
                self.held = True
            else:
                self.phase = Phase.DONE
        return out

    def tick(self) -> None:
        """A tick passed: a held stream looks at the log (and at whether its run is still held) again."""
        self.held = False

    def from_live(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Events from the live feed: what to send now (nothing while behind: the log will tell)."""
        if self.done or self.behind:
            return []
        return self._accept(events, check_gaps=True)

    def lost(self) -> None:
        """The live feed dropped events for this reader (its buffer overflowed)."""
        if not self.done:
            self.behind = True

    def close(self) -> None:
        self.phase = Phase.DONE

    def _accept(self, events: Iterable[dict[str, Any]], *, check_gaps: bool) -> list[dict[str, Any]]:
        out = []
        for event in events:
            event_id = event["id"]
            if event_id <= self.last_id:
                continue  # already sent: the history and the live feed overlap
            if check_gaps and event_id != self.last_id + 1:
                self.behind = True
                break
            self.last_id = event_id
            if _is_terminal(event):
                self.phase = Phase.ENDING
            elif self.phase is Phase.ENDING and not _revives(event):
                pass  # a stage after fit (stage_end, its media): the run's end still stands
            else:
                self.phase = Phase.LIVE
            self.held = False
            out.append(event)
        return out


def _is_terminal(event: dict[str, Any]) -> bool:
    return event.get("type") in TERMINAL_EVENT_TYPES


def _revives(event: dict[str, Any]) -> bool:
    """An event after a terminal one that means the run trains again (a resume, or its owner restoring it)."""
    kind = event.get("type")
    return kind == EventType.RUN_STARTED.value or (kind == EventType.STATUS.value and event.get("status") == "running")


class _Idle:
    def __repr__(self) -> str:
        return "EventStream.IDLE"


class EventStream:
    """Iterate over the run's events with ``id > after_id`` in order, then live ones (blocking driver).

    Yields ``None`` after ``tick_s`` seconds without an event (a heartbeat
    for SSE, a chance to read client messages for a WebSocket). Ends as
    :class:`StreamState` says. The constructor subscribes, then reads the
    history (blocking I/O), so an unreadable source raises there
    (``OSError``), before any byte is sent, and nothing published meanwhile
    is missed. Always :meth:`close` it (or use ``with``): that unsubscribes.
    It also unsubscribes when it ends.

    With ``mark_idle=True`` it also yields :attr:`IDLE` whenever it is about
    to wait for the next live event: a writer can batch the events of a burst
    (an epoch's end and its checkpoints) into one write and flush on IDLE.
    """

    #: Yielded (with ``mark_idle=True``) before waiting: nothing more is ready now.
    IDLE = _Idle()

    def __init__(
        self,
        hub: EventHub,
        run_id: str,
        make_source: SourceFactory,
        after_id: int = 0,
        *,
        tick_s: float = 15.0,
        mark_idle: bool = False,
    ) -> None:
        self.run_id = run_id
        self.tick_s = tick_s
        self.mark_idle = mark_idle
        self.state = StreamState(after_id)
        self._subscription = hub.subscribe(run_id, make_source)
        try:
            self._source = make_source()
            history = self._source.read(after_id)
            tail = self._source.last_event() if not history and after_id > 0 else None
            self._first = self.state.start(history, tail)
        except BaseException:
            self._subscription.close()
            raise
        self._events = self._follow()

    @property
    def last_id(self) -> int:
        return self.state.last_id

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._subscription.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self) -> Iterator[Any]:
        state, subscription = self.state, self._subscription
        try:
            yield from self._first
            while not state.done:
                if state.needs_read:
                    read = self._read_log()
                    if read is not None:
                        yield from state.from_log(read, attached=self._attached())
                        continue
                    # unreadable right now: wait a tick for the live feed below, then read again
                live = subscription.get_nowait()
                if live is None:
                    if self.mark_idle:
                        yield self.IDLE
                    live = subscription.get(timeout=min(self.tick_s, HOLD_CHECK_S) if state.held else self.tick_s)
                if subscription.ended:  # the server is shutting down
                    return
                if live is None:
                    state.tick()
                    yield None
                    continue
                if subscription.overflowed:
                    subscription.reset()
                    state.lost()
                    continue
                yield from state.from_live([live])
        finally:
            # Also when the stream ends by itself: some servers never call close().
            subscription.close()

    def _attached(self) -> bool:
        if self.state.phase is not Phase.ENDING:
            return False
        try:
            return bool(self._source.attached())
        except OSError:
            return False

    def _read_log(self) -> list[dict[str, Any]] | None:
        try:
            return self._source.read(self.state.last_id)
        except OSError as exc:  # e.g. MLflow down for a moment: the watcher retries too
            log.debug("catch-up read of run %s failed: %s", self.run_id, exc)
            return None
