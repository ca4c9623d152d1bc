"""EventStream: one reader's view of a run — its history after an id, then live, to the end.

The same object feeds the SSE route and the WebSocket route (Flask, by
iterating it in a thread) and the native ASGI routes (asyncio, with
:meth:`EventStream.aiter`), so every transport sends the same events in the
same order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, AsyncIterator, Iterator

from .hub import EventHub, SourceFactory
from .types import TERMINAL_EVENT_TYPES

log = logging.getLogger(__name__)


class _Idle:
    def __repr__(self) -> str:
        return "EventStream.IDLE"


class EventStream:
    """Iterate over the run's events with ``id > after_id`` in order, then live ones.

    Yields ``None`` after ``tick_s`` seconds without an event (a heartbeat
    for SSE, a chance to read client messages for a WebSocket). Ends after
    the terminal event, unless more events follow it (a resumed run writes a
    new ``run_started`` after its old terminal event; the stream goes on); a
    client that already has a finished run's terminal event gets nothing.

    Nothing is lost: the reader subscribes before it reads the history, and
    whenever its buffer overflowed or an id was skipped it reads the gap from
    the source (the durable log). The constructor subscribes and reads the
    history (blocking I/O), so an unreadable source raises there
    (``OSError``), before any byte is sent. Always :meth:`close` it (or use
    ``with``): that unsubscribes. It also unsubscribes when it ends.

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
        self.last_id = after_id
        self._subscription = hub.subscribe(run_id, make_source)
        try:
            self._source = make_source()
            self._backlog: deque[dict[str, Any]] = deque(self._source.read(after_id))
            self._complete = not self._backlog and after_id > 0 and _ends_with_terminal(self._source, after_id)
        except BaseException:
            self._subscription.close()
            raise
        self._events = self._follow()

    # -- blocking iteration (a thread per reader) ----------------------------------
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
        try:
            if self._complete:
                return
            while True:
                event = self._next_in_backlog()
                if event is not None:
                    yield event
                    if _is_terminal(event) and not self._refill(self._catch_up()):
                        return
                    continue
                live = self._subscription.get_nowait()
                if live is None:
                    if self.mark_idle:
                        yield self.IDLE
                    live = self._subscription.get(timeout=self.tick_s)
                if self._subscription.ended:  # the server is shutting down
                    return
                if live is None:
                    yield None
                    self._refill(self._catch_up())  # belt and braces: only a failed watcher misses one
                elif self._needs_catch_up(live):
                    self._subscription.reset()
                    self._refill(self._catch_up())
                else:
                    self._backlog.append(live)
        finally:
            # Also when the stream ends by itself: some servers never call close()
            # (MLflow's uvicorn bridge does not close WSGI iterables).
            self._subscription.close()

    # -- asyncio iteration (no thread per reader) ---------------------------------------
    async def aiter(self) -> AsyncIterator[Any]:
        """The same events for an asyncio reader; reads of the source run in a worker thread."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:  # called in the publisher's thread
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:  # the loop is closed: this reader is gone
                pass

        self._subscription.waker = wake
        try:
            if self._complete:
                return
            while True:
                event = self._next_in_backlog()
                if event is not None:
                    yield event
                    if _is_terminal(event) and not self._refill(await asyncio.to_thread(self._catch_up)):
                        return
                    continue
                live = self._subscription.get_nowait()
                if live is None:
                    if self.mark_idle:
                        yield self.IDLE
                    live = await self._aget(woken)
                if self._subscription.ended:  # the server is shutting down
                    return
                if live is None:
                    yield None
                    self._refill(await asyncio.to_thread(self._catch_up))
                elif self._needs_catch_up(live):
                    self._subscription.reset()
                    self._refill(await asyncio.to_thread(self._catch_up))  # the loop never reads files
                else:
                    self._backlog.append(live)
        finally:
            self._subscription.waker = None
            self.close()

    async def _aget(self, woken: asyncio.Event) -> dict[str, Any] | None:
        woken.clear()
        event = self._subscription.get_nowait()  # offered between the first look and clear()
        if event is not None:
            return event
        try:
            await asyncio.wait_for(woken.wait(), self.tick_s)
        except asyncio.TimeoutError:
            return None
        return self._subscription.get_nowait()

    # -- the logic both share ---------------------------------------------------------
    def _next_in_backlog(self) -> dict[str, Any] | None:
        while self._backlog:
            event = self._backlog.popleft()
            if event["id"] > self.last_id:  # else already sent: history and live feed overlap
                self.last_id = event["id"]
                return event
        return None

    def _refill(self, events: list[dict[str, Any]]) -> bool:
        """Add ``events`` to the backlog; whether it now holds any event not sent yet."""
        self._backlog.extend(events)
        return any(event["id"] > self.last_id for event in self._backlog)

    def _needs_catch_up(self, live: dict[str, Any]) -> bool:
        # This reader fell behind (its buffer overflowed) or the feed skipped ids: the log has it all.
        return self._subscription.overflowed or live["id"] > self.last_id + 1

    def _catch_up(self) -> list[dict[str, Any]]:
        try:
            return self._source.read(self.last_id)
        except OSError as exc:  # e.g. MLflow down for a moment: the stream waits, the watcher retries
            log.debug("catch-up read of run %s failed: %s", self.run_id, exc)
            return []


def _is_terminal(event: dict[str, Any]) -> bool:
    return event.get("type") in TERMINAL_EVENT_TYPES


def _ends_with_terminal(source: Any, after_id: int) -> bool:
    """Whether the source's last event, already known to the client (id <= after_id), is terminal."""
    events = source.read(0)
    return bool(events) and events[-1]["id"] <= after_id and _is_terminal(events[-1])
