"""The live API's requests and replies, free of any web framework (the sans-I/O layer).

A transport (the Flask blueprint under WSGI, the ASGI app under uvicorn)
turns what its server received into an :class:`ApiRequest`, lets the API
answer with a :class:`Reply`, and writes that out. Handlers never see
Flask, Starlette or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..record.jsonio import dumps_strict


class Headers(Mapping[str, str]):
    """Case-insensitive request headers (the first value of a repeated header)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, str] = {}
        for name, value in items:
            self._items.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._items.get(name.lower(), default)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class ApiRequest:
    """What the API needs to know of one request.

    ``path`` is relative to the app (``root_path`` is where the app is
    mounted, WSGI's ``SCRIPT_NAME``); ``local_address`` is the IP the
    connection came in on (for the Host check); ``body`` is read by the
    transport for the routes that take one.
    """

    method: str
    path: str
    headers: Headers
    query: Mapping[str, str] = field(default_factory=dict)
    root_path: str = ""
    local_address: str | None = None
    is_websocket: bool = False
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Set by the guard: who the request is from (see :mod:`.auth`).
    principal: Any = None

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")


@dataclass
class Reply:
    """A complete response: status, headers and body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def header_items(self) -> list[tuple[str, str]]:
        items = [("Content-Type", self.content_type)] if self.content_type else []
        return items + list(self.headers.items())


class ApiError(Exception):
    """An error answered as JSON ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}

    def reply(self) -> Reply:
        return json_reply(self.body(), self.status, self.headers)


def json_reply(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    """Strict JSON (no NaN), never cached: these are live values."""
    return Reply(status, dumps_strict(value).encode("utf-8"), {"Cache-Control": "no-store", **(headers or {})})
