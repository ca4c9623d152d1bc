"""Server-sent events framing: ``id:`` and ``data:`` lines, strict JSON, heartbeat comments.

No ``event:`` line: a browser's ``EventSource.onmessage`` then sees every
event, and the JSON's ``type`` says which one it is.
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

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[dict[str, Any], str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, event: dict[str, Any]) -> tuple[str, bytes]:
        key = id(event)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is event:
                return entry[1], entry[2]
        text = dumps_strict(event)
        frame = f"id: {event['id']}\ndata: {text}\n\n".encode("utf-8")
        with self._lock:
            self._entries[key] = (event, text, frame)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return text, frame


_SERIALIZED = _Serialized()


def event_json(event: dict[str, Any]) -> str:
    """The event as strict JSON: a WebSocket message, the ``data:`` of an SSE frame."""
    return _SERIALIZED.get(event)[0]


def format_event(event: dict[str, Any]) -> bytes:
    """The SSE frame ``id: <id>``, ``data: <strict JSON>``, blank line (strict JSON has no raw newline)."""
    return _SERIALIZED.get(event)[1]


class FrameBatcher:
    """Turns what an EventStream (``mark_idle=True``) yields into SSE writes.

    A burst of events (an epoch's end and its checkpoints) becomes one write:
    events are held until the stream goes idle, a heartbeat (``None``) or the end.
    The one place both the WSGI body and the ASGI body frame events.
    """

    def __init__(self) -> None:
        self._batch: list[bytes] = []

    def feed(self, item: Any) -> bytes | None:
        """The bytes to send now, if ``item`` ends a burst; else None."""
        if item is EventStream.IDLE:
            return self.flush()
        if item is None:
            return (self.flush() or b"") + HEARTBEAT
        self._batch.append(format_event(item))
        return None

    def flush(self) -> bytes | None:
        if not self._batch:
            return None
        chunk, self._batch = b"".join(self._batch), []
        return chunk


def frames(items: Iterable[Any]) -> Iterator[bytes]:
    """SSE bytes for what an EventStream (``mark_idle=True``) yields, a burst of events per write."""
    batcher = FrameBatcher()
    for item in items:
        chunk = batcher.feed(item)
        if chunk:
            yield chunk
    tail = batcher.flush()
    if tail:
        yield tail


class SSEBody:
    """The response body of an SSE stream: an iterator of byte chunks that closes its stream.

    A class, not a generator, so that the WSGI server's ``close()`` reaches
    the :class:`EventStream` (and unsubscribes) even when the client left
    before the first chunk was asked for.
    """

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
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
