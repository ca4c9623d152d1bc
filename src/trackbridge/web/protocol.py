"""The rules of the live API that do not depend on the web framework.

The Flask blueprint and the native ASGI routes (MLflow's uvicorn mode) both
follow them: how catalog errors become HTTP statuses, how ``Last-Event-ID``
is read, how a stream is opened, and what a WebSocket client may say.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from ..events.hub import EventHub
from ..events.sources import SourceUnavailableError
from ..events.stream import EventStream
from ..record.ids import InvalidRunIdError
from ..record.run_dir import RunNotFoundError
from .catalog import RunCatalog, RunConflictError

_LAST_EVENT_ID = re.compile(r"\d{1,18}")
STOP_MESSAGE = {"type": "stop"}


class ApiError(Exception):
    """An error answered as JSON ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def api_call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a catalog call; its errors become ApiErrors: 400 bad id, 404 unknown, 409 conflict, 503 MLflow down."""
    try:
        return function(*args)
    except InvalidRunIdError as exc:
        raise ApiError(400, str(exc)) from None
    except RunNotFoundError as exc:
        raise ApiError(404, str(exc)) from None
    except RunConflictError as exc:
        raise ApiError(409, str(exc)) from None
    except SourceUnavailableError as exc:
        raise ApiError(503, str(exc)) from None
    except (OSError, ValueError) as exc:  # a run.json being replaced, unreadable, or not JSON
        run_id = args[-1] if args and isinstance(args[-1], str) else "?"
        raise ApiError(404, f"run {run_id!r} cannot be read: {type(exc).__name__}") from None


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """``Last-Event-ID`` (a browser's reconnect) wins over ``?last_event_id=`` (the first connect)."""
    raw = header if header is not None and header.strip() else (query or "")
    raw = raw.strip()
    if raw == "":
        return 0
    if not _LAST_EVENT_ID.fullmatch(raw):
        raise ApiError(400, f"Last-Event-ID must be a non-negative integer (an event id), got {raw[:40]!r}")
    return int(raw)


def open_stream(
    catalog: RunCatalog, hub: EventHub, run_id: str, after_id: int, tick_s: float, *, mark_idle: bool = False
) -> EventStream:
    """The run's EventStream from ``after_id`` (blocking: subscribes and reads the history)."""
    make_source = api_call(catalog.event_source, run_id)
    try:
        return EventStream(hub, run_id, make_source, after_id, tick_s=tick_s, mark_idle=mark_idle)
    except SourceUnavailableError as exc:
        raise ApiError(503, str(exc)) from None
    except OSError as exc:
        raise ApiError(404, f"the events of run {run_id!r} cannot be read: {type(exc).__name__}") from None


def ws_reply(catalog: RunCatalog, run_id: str, message: str | bytes) -> dict[str, Any]:
    """The answer to a WebSocket client's message: ``{"type": "stop"}`` is the one it may send."""
    try:
        data = json.loads(message)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("type") != STOP_MESSAGE["type"]:
        return {"type": "error", "error": 'unknown message; send {"type": "stop"} to stop the run', "status": 400}
    try:
        return {"type": "stop_requested", **api_call(catalog.request_stop, run_id, "websocket")}
    except ApiError as exc:
        return {"type": "error", "error": exc.message, "status": exc.status}
