"""EventEmitter: numbers and shapes events for one run and hands them to a sink."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from .types import EventType, make_event


class EventSink(Protocol):
    def put(self, event: dict[str, Any]) -> Any: ...


class EventEmitter:
    """Gives each event of a run the next id (from ``first_id``) and puts it to ``sink``."""

    def __init__(self, sink: EventSink, run_id: str | None, first_id: int = 1) -> None:
        self.sink = sink
        self.run_id = run_id
        self._next_id = first_id
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"sink": self.sink, "run_id": self.run_id, "_next_id": self._next_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def next_id(self) -> int:
        return self._next_id

    def emit(self, event_type: EventType | str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            event = make_event(self._next_id, event_type, self.run_id, **fields)
            self._next_id += 1
            self.sink.put(event)
        return event
