"""EventStream: one reader's view of a run — its history after an id, then live, to the end.

The same iterator feeds the SSE route and the WebSocket route, so both send
the same events in the same order.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Iterator

from .hub import EventHub, SourceFactory
from .types import TERMINAL_EVENT_TYPES

log = logging.getLogger(__name__)


class EventStream:
    """Iterate over the run's events with ``id > after_id`` in order, then live ones.

    Yields ``None`` after ``tick_s`` seconds without an event (a heartbeat
    for SSE, a chance to read client messages for a WebSocket). Ends after
    the terminal event, unless more events follow it (a resumed run writes a
    new ``run_started`` after its old terminal event; the stream goes on).

    Nothing is lost: the reader subscribes before it reads the history, and
    whenever its buffer overflowed or an id was skipped it reads the gap from
    the source (the durable log). The constructor reads the history, so an
    unreadable source raises there (``OSError``), before any byte is sent.
    Always :meth:`close` it (or use ``with``): that unsubscribes.
    """

    def __init__(
        self,
        hub: EventHub,
        run_id: str,
        make_source: SourceFactory,
        after_id: int = 0,
        *,
        tick_s: float = 15.0,
    ) -> None:
        self.run_id = run_id
        self.tick_s = tick_s
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

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        return self

    def __next__(self) -> dict[str, Any] | None:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._subscription.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self) -> Iterator[dict[str, Any] | None]:
        try:
            yield from self._events_until_end()
        finally:
            # Also when the stream ends by itself: some servers never call close()
            # (MLflow's uvicorn bridge does not close WSGI iterables).
            self._subscription.close()

    def _events_until_end(self) -> Iterator[dict[str, Any] | None]:
        if self._complete:  # the client already has the terminal event of a finished run
            return
        backlog, subscription = self._backlog, self._subscription
        while True:
            while backlog:
                event = backlog.popleft()
                if event["id"] <= self.last_id:
                    continue  # already sent: history and live feed overlap
                yield event
                self.last_id = event["id"]
                if event.get("type") in TERMINAL_EVENT_TYPES:
                    backlog.extend(self._catch_up())
                    if not backlog:
                        return
            event = subscription.get(timeout=self.tick_s)
            if event is None:
                yield None
                # Belt and braces: a live event is only missed if its watcher failed.
                backlog.extend(self._catch_up())
            elif subscription.overflowed or event["id"] > self.last_id + 1:
                # This reader fell behind (or the feed skipped ids): the log has it all.
                subscription.reset()
                backlog.extend(self._catch_up())
            else:
                backlog.append(event)

    def _catch_up(self) -> list[dict[str, Any]]:
        try:
            return self._source.read(self.last_id)
        except OSError as exc:  # e.g. MLflow down for a moment: the stream waits, the watcher retries
            log.debug("catch-up read of run %s failed: %s", self.run_id, exc)
            return []


def _ends_with_terminal(source: Any, after_id: int) -> bool:
    """Whether the source's last event, already known to the client (id <= after_id), is terminal."""
    events = source.read(0)
    return bool(events) and events[-1]["id"] <= after_id and events[-1].get("type") in TERMINAL_EVENT_TYPES
