"""events.jsonl: the durable, replayable log of a run's events (ids 1, 2, 3, ... with no gap)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from ..record.jsonio import dumps_strict, read_jsonl
from ..record.jsonl import JsonlAppender, last_record
from ..record.locks import lock_for
from .broker import EventBroker


def read_events(path: str | os.PathLike[str], after_id: int = 0) -> Iterator[dict[str, Any]]:
    """The complete events in the log with ``id > after_id``, in order."""
    for event in read_jsonl(path):
        if isinstance(event, dict) and isinstance(event.get("id"), int) and event["id"] > after_id:
            yield event


def last_event_id(path: str | os.PathLike[str]) -> int:
    """The id of the log's last complete event (0 if none), read from its tail, not the whole file."""
    event = last_record(path, is_event)
    return event["id"] if event is not None else 0


def is_event(value: Any) -> bool:
    """Whether a parsed line is an event: a dict with an integer id."""
    return isinstance(value, dict) and isinstance(value.get("id"), int) and not isinstance(value["id"], bool)


def parse_event_line(line: bytes) -> dict[str, Any] | None:
    """One line of events.jsonl as an event, or None (blank, torn, not JSON, no integer id)."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return event if is_event(event) else None


class EventLog:
    """An event sink with ``.put(event)``: appends to events.jsonl, then fans out in-process.

    The log numbers what it appends: each event gets the id after the log's
    last one, whatever id it came with, so the file stays gapless even when
    another process (the CLI closing a dead run) appended in between; the
    event as written (its final id) is returned and published. Appends hold
    the run's lock. The file is written first, so a subscriber that finds a
    gap can always catch up from it.
    """

    def __init__(self, path: str | os.PathLike[str], broker: EventBroker | None = None) -> None:
        self.path = Path(path)
        self.broker = broker
        self._appender = JsonlAppender(self.path)
        self._known: tuple[int, int, int] | None = None  # (inode, size, last id) as this log left the file

    def last_id(self) -> int:
        known = self._known
        if known is not None and _identity(self.path) == known[:2]:
            return known[2]
        return last_event_id(self.path)

    def put(self, event: dict[str, Any], *, fsync: bool = True) -> dict[str, Any]:
        """Append ``event`` as the log's next id; returns the event as written. Raises OSError (nothing kept)."""
        return self.put_many([event], fsync=fsync)[0]

    def put_many(self, events: list[dict[str, Any]], *, fsync: bool = True) -> list[dict[str, Any]]:
        """Append ``events`` in order, numbered after the log's last id, in one write under the run's lock.

        All or nothing: on an ``OSError`` the file is cut back and nothing is published.
        """
        if not events:
            return []
        with lock_for(self.path.parent):
            first = self.last_id() + 1
            written = [{**event, "id": first + i} for i, event in enumerate(events)]
            self._appender.append_lines([dumps_strict(event) for event in written], fsync=fsync)
            ino, size = _identity(self.path) or (0, 0)
            self._known = (ino, size, written[-1]["id"])
        if self.broker is not None:
            for event in written:
                self.broker.publish(event)
        return written

    def read(self, after_id: int = 0) -> Iterator[dict[str, Any]]:
        return read_events(self.path, after_id)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size
