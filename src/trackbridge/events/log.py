"""events.jsonl: the durable, replayable log of a run's events (ids 1, 2, 3, ...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from ..record.jsonio import append_jsonl, read_jsonl
from .broker import EventBroker


def read_events(path: str | os.PathLike[str], after_id: int = 0) -> Iterator[dict[str, Any]]:
    """The complete events in the log with ``id > after_id``, in order."""
    for event in read_jsonl(path):
        if isinstance(event, dict) and isinstance(event.get("id"), int) and event["id"] > after_id:
            yield event


def last_event_id(path: str | os.PathLike[str]) -> int:
    """The highest id in the log, 0 when it is empty or missing."""
    last = 0
    for event in read_events(path):
        last = max(last, event["id"])
    return last


class EventLog:
    """An event sink with ``.put(event)``: appends to events.jsonl, then fans out in-process.

    It is the queue an :class:`~trackbridge.callbacks.SSENotifier` writes to
    in the stack. The file is written first, so a subscriber that finds a gap
    can always catch up from it.
    """

    def __init__(self, path: str | os.PathLike[str], broker: EventBroker | None = None) -> None:
        self.path = Path(path)
        self.broker = broker

    def last_id(self) -> int:
        return last_event_id(self.path)

    def put(self, event: dict[str, Any]) -> None:
        append_jsonl(self.path, event)
        if self.broker is not None:
            self.broker.publish(event)

    def read(self, after_id: int = 0) -> Iterator[dict[str, Any]]:
        return read_events(self.path, after_id)
