"""Server-sent events framing: ``id:`` and ``data:`` lines, strict JSON, heartbeat comments.

:func:`frame` is the one place an SSE byte is made, for the WSGI and the ASGI
transport alike. No ``event:`` line: a browser's ``EventSource.onmessage``
then sees every event, and the JSON's ``type`` says which one it is.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterable, Iterator

from ..events.stream import EventStream
from ..record.jsonio import dumps_strict

HEARTBEAT = b": heartbeat\n\n"
# Sent first, so a client gets the response headers at once even before the run's first event.
OPENING = b": trackbridge event stream\nretry: 2000\n\n"


class _Serialized:
    """The wire forms of the events being fanned out now, computed once per event.

    A live event reaches every reader of a run as the *same* dict (the broker
    hands one object to all its subscribers), so a thousand readers cost one
    serialization, not a thousand. Keyed by identity; an entry holds the event
    itself, so its id cannot be reused by another object while it is cached.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[dict[str, Any], str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, event: dict[str, Any]) -> tuple[str, bytes]:
        key = id(event)
        entry = self._entries.get(key)  # a dict read is atomic: the lock guards only the writes
        if entry is not None and entry[0] is event:
            return entry[1], entry[2]
        text = dumps_strict(event)
        data = f"id: {event['id']}\ndata: {text}\n\n".encode("utf-8")
        with self._lock:
            self._entries[key] = (event, text, data)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return text, data


_SERIALIZED = _Serialized()


def event_json(event: dict[str, Any]) -> str:
    """The event as strict JSON: a WebSocket message, the ``data:`` of an SSE frame."""
    return _SERIALIZED.get(event)[0]


def frame(events: Iterable[dict[str, Any]] | None) -> bytes:
    """The SSE bytes of a batch of events (``id: <id>``, ``data: <strict JSON>``, blank line each);
    ``None`` is a heartbeat comment. Strict JSON has no raw newline, so one ``data:`` line suffices."""
    if events is None:
        return HEARTBEAT
    return b"".join(_SERIALIZED.get(event)[1] for event in events)


def frames(items: Iterable[Any]) -> Iterator[bytes]:
    """SSE writes for what a blocking EventStream (``mark_idle=True``) yields: a burst per write."""
    batch: list[dict[str, Any]] = []
    for item in items:
        if item is EventStream.IDLE or item is None:
            if batch:
                yield frame(batch)
                batch = []
            if item is None:
                yield HEARTBEAT
            continue
        batch.append(item)
    if batch:
        yield frame(batch)


class SSEBody:
    """The WSGI body of an SSE stream: an iterator of byte chunks that closes its stream.

    A class, not a generator, so that the WSGI server's ``close()`` reaches
    the :class:`EventStream` (and unsubscribes) even when the client left
    before the first chunk was asked for. ``on_close`` runs once, at the end.
    """

    def __init__(self, stream: EventStream, on_close: Any = None) -> None:
        self.stream = stream
        self._on_close = on_close
        self._chunks = self._generate()

    def _generate(self) -> Iterator[bytes]:
        yield OPENING
        yield from frames(self.stream)

    def __iter__(self) -> "SSEBody":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self.stream.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
