"""events.jsonl: the durable, replayable log of a run's events (ids 1, 2, 3, ... with no gap)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from ..record.jsonio import read_jsonl
from ..record.jsonl import JsonlAppender
from ..record.locks import lock_for
from .broker import EventBroker


def read_events(path: str | os.PathLike[str], after_id: int = 0) -> Iterator[dict[str, Any]]:
    """The complete events in the log with ``id > after_id``, in order."""
    for event in read_jsonl(path):
        if isinstance(event, dict) and isinstance(event.get("id"), int) and event["id"] > after_id:
            yield event


def last_event_id(path: str | os.PathLike[str]) -> int:
    """The id of the log's last complete event (0 if none), read from its tail, not the whole file."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            chunk = 1 << 16
            while True:
                start = max(0, size - chunk)
                fh.seek(start)
                data = fh.read(size - start)
                lines = data[: data.rfind(b"\n") + 1].splitlines()
                for line in reversed(lines if start == 0 else lines[1:]):  # lines[0] may be cut
                    event = parse_event_line(line)
                    if event is not None:
                        return event["id"]
                if start == 0:
                    return 0
                chunk *= 4
    except FileNotFoundError:
        return 0


def parse_event_line(line: bytes) -> dict[str, Any] | None:
    """One line of events.jsonl as an event, or None (blank, torn, not JSON, no integer id)."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(event, dict) and isinstance(event.get("id"), int) and not isinstance(event["id"], bool):
        return event
    return None


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
        with lock_for(self.path.parent):
            written = {**event, "id": self.last_id() + 1}
            self._appender.append(written, fsync=fsync)
            ino, size = _identity(self.path) or (0, 0)
            self._known = (ino, size, written["id"])
        if self.broker is not None:
            self.broker.publish(written)
        return written

    def read(self, after_id: int = 0) -> Iterator[dict[str, Any]]:
        return read_events(self.path, after_id)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size
