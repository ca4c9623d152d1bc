"""Server-sent events framing: ``id:`` and ``data:`` lines, strict JSON, heartbeat comments.

No ``event:`` line: a browser's ``EventSource.onmessage`` then sees every
event, and the JSON's ``type`` says which one it is.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..events.stream import EventStream
from ..record.jsonio import dumps_strict

HEARTBEAT = b": heartbeat\n\n"
# Sent first, so a client gets the response headers at once even before the run's first event.
OPENING = b": trackbridge event stream\nretry: 2000\n\n"


def format_event(event: dict[str, Any]) -> bytes:
    """``id: <id>\\ndata: <strict JSON>\\n\\n`` (one line: strict JSON has no raw newline)."""
    return f"id: {event['id']}\ndata: {dumps_strict(event)}\n\n".encode("utf-8")


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
        for event in self.stream:
            yield HEARTBEAT if event is None else format_event(event)

    def __iter__(self) -> "SSEBody":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self.stream.close()
