"""Native ASGI routes for the SSE stream and the WebSocket, for MLflow's default server (uvicorn).

Under uvicorn, ``mlflow server`` runs its Flask app through a WSGI bridge.
An SSE stream served there holds one of the bridge's threads (anyio's pool:
40 per process, shared with every MLflow REST call) until its run ends —
even after its client left, since the bridge neither notices a disconnect
nor closes the response — and a WebSocket never reaches Flask at all. These
two routes serve the same paths natively on MLflow's FastAPI app, ahead of
its Flask mount: a stream costs a coroutine, not a thread. They follow the
blueprint's rules (:mod:`.protocol`, the token, the cross-origin policy) and
share its hub, so they send exactly the same events; every other route of
the API stays in the blueprint.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Mapping

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..events.stream import EventStream
from ..record.jsonio import dumps_strict
from .auth import CHALLENGE, UNAUTHORIZED, token_ok
from .blueprint import LiveApi
from .protocol import ApiError, api_call, open_stream, parse_last_event_id, ws_reply
from .sse import OPENING, FrameBatcher, event_json

log = logging.getLogger(__name__)

STREAM_PATH = "/api/training/{run_id}/stream"
WS_PATH = "/api/training/{run_id}/ws"
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def live_routes(live: LiveApi) -> list[BaseRoute]:
    """The SSE and WebSocket routes over ``live`` (the state of a mounted blueprint)."""

    async def stream(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _error(ApiError(405, f"{request.method} is not allowed here; use GET", {"Allow": "GET"}))
        try:
            _check_token(live, request.headers, request.query_params)
            after_id = parse_last_event_id(request.headers.get("last-event-id"), request.query_params.get("last_event_id"))
            if request.method == "HEAD":
                await asyncio.to_thread(api_call, live.catalog.event_source, request.path_params["run_id"])
                return Response(media_type="text/event-stream", headers={"Cache-Control": "no-store"})
            await asyncio.to_thread(live.catalog.sweep_dead_runs)
            events = await asyncio.to_thread(
                functools.partial(
                    open_stream, live.catalog, live.hub, request.path_params["run_id"], after_id,
                    live.settings.heartbeat_s, mark_idle=True,
                )
            )
        except ApiError as exc:
            return _error(exc, live.policy.headers(request.headers.get("origin"), request.method))
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        headers.update(live.policy.headers(request.headers.get("origin"), request.method))
        return _SSEResponse(events, headers)

    async def websocket(ws: WebSocket) -> None:
        run_id = ws.path_params["run_id"]
        try:
            _check_token(live, ws.headers, ws.query_params)
            reason = live.policy.refusal(ws.headers.get("origin"), ws.headers.get("host", ""))
            if reason:
                raise ApiError(403, reason)
            after_id = parse_last_event_id(ws.headers.get("last-event-id"), ws.query_params.get("last_event_id"))
            events = await asyncio.to_thread(
                open_stream, live.catalog, live.hub, run_id, after_id, live.settings.heartbeat_s
            )
        except ApiError as exc:
            await _deny(ws, exc)
            return
        try:
            await ws.accept()
            await _serve_websocket(ws, events, live, run_id)
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:  # the client left mid-send
            log.debug("WebSocket of run %s ended by the client: %r", run_id, exc)
        finally:
            events.close()

    return [Route(STREAM_PATH, stream, methods=_METHODS), WebSocketRoute(WS_PATH, websocket)]


def install(fastapi_app: Any, live: LiveApi) -> None:
    """Put the live routes first on MLflow's FastAPI app, before the catch-all Flask mount."""
    fastapi_app.router.routes[0:0] = live_routes(live)


async def _serve_websocket(ws: WebSocket, events: EventStream, live: LiveApi, run_id: str) -> None:
    async with anyio.create_task_group() as group:

        async def answer_client() -> None:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    group.cancel_scope.cancel()
                    return
                text = message.get("text") if message.get("text") is not None else message.get("bytes")
                reply = await asyncio.to_thread(ws_reply, live.catalog, run_id, text)
                await ws.send_text(dumps_strict(reply))

        group.start_soon(answer_client)
        async for event in events.aiter():
            if event is not None:
                await ws.send_text(event_json(event))
        group.cancel_scope.cancel()
    await ws.close()


class _SSEResponse(StreamingResponse):
    """A streaming response that always closes its EventStream, even if the body never started."""

    def __init__(self, events: EventStream, headers: Mapping[str, str]) -> None:
        self.events = events
        super().__init__(self._body(), media_type="text/event-stream", headers=headers)

    async def _body(self):  # type: ignore[no-untyped-def]
        yield OPENING
        batcher = FrameBatcher()
        async for item in self.events.aiter():
            chunk = batcher.feed(item)
            if chunk:
                yield chunk
        tail = batcher.flush()
        if tail:
            yield tail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.events.close()


def _check_token(live: LiveApi, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    # Starlette's headers are case-insensitive, like Flask's.
    if not token_ok(headers, query, live.settings.token):
        raise ApiError(401, UNAUTHORIZED, CHALLENGE)


def _error(exc: ApiError, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        dumps_strict(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **exc.headers, **(headers or {})},
    )


async def _deny(ws: WebSocket, exc: ApiError) -> None:
    """Refuse the handshake with the JSON error where the server can say it, else close (policy violation)."""
    try:
        await ws.send_denial_response(_error(exc))
    except RuntimeError:  # the server lacks the WebSocket denial-response extension
        await ws.close(code=1008, reason=exc.message[:120])
