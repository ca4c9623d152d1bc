"""AsgiApp: the live API as a raw ASGI app — the asyncio transport of the route table.

``trackbridge serve`` runs it under uvicorn; ``mlflow server --app-name
trackbridge`` (uvicorn, MLflow's default) puts it in front of MLflow's own
ASGI app, which gets every request that is not the API's. A stream costs a
coroutine, not a thread: each run's new events reach all its readers in one
pass (:mod:`trackbridge.events.fanout`), and a reader's driver here only
frames its batch (:func:`~trackbridge.web.sse.frame`) and writes it. JSON
routes read files in a worker thread, so the loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import parse_qsl

from ..events.fanout import END, AsyncEventStream
from ..record.jsonio import dumps_strict
from .api import LiveApi, StreamPlan
from .http import ApiError, ApiRequest, Headers, Reply
from .routes import NO_ROUTE, Kind, MethodNotAllowed, Route
from .sse import OPENING, event_json, frame

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The ASGI scope extension under which ``trackbridge serve``'s protocol passes its transport.
TRANSPORT_EXTENSION = "trackbridge.transport"
#: A reader whose socket holds more unsent bytes than this is written through its driver instead.
MAX_UNSENT_BYTES = 64 * 1024
#: A request body must arrive within this many seconds (a trickled body holds a coroutine, not more).
BODY_TIMEOUT_S = 30.0
_STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]


class AsgiApp:
    """Serve ``live``'s routes; hand everything else to ``fallback`` (MLflow's app), else a JSON 404."""

    def __init__(self, live: LiveApi, fallback: ASGIApp | None = None) -> None:
        self.live = live
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await (self.fallback(scope, receive, send) if self.fallback else self._lifespan(receive, send))
            return
        path = _app_path(scope)
        if self.fallback is not None and not self.live.routes.serves(path):
            await self.fallback(scope, receive, send)
            return
        request = _request(scope, path)
        try:
            matched = self.live.routes.match(request.method, path)
            if matched is None:
                raise ApiError(404, f"no route {path!r}; see GET /api/runs")
        except (MethodNotAllowed, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else ApiError(
                405, f"{request.method} is not allowed here; use {exc}", {"Allow": str(exc)}
            )
            try:
                await self._admit(request, NO_ROUTE)  # Host and credentials first: a 404 tells what exists
            except ApiError as refused:
                error = refused
            if kind == "http":
                await self._reply(send, error.reply(), request)
            elif kind == "websocket":
                await receive()
                await _deny(scope, send, error)
            return
        route, request.params = matched
        if kind == "websocket":
            await self._websocket(route, request, receive, send, scope)
        elif kind == "http":
            await self._http(route, request, receive, send, scope)

    # -- HTTP -------------------------------------------------------------------------------
    async def _http(self, route: Route, request: ApiRequest, receive: Receive, send: Send, scope: Scope) -> None:
        live = self.live
        if request.method == "OPTIONS":
            await self._reply(send, live.preflight(request), request)
            return
        try:
            await self._admit(request, route)
            if route.kind is Kind.WEBSOCKET:
                raise ApiError(400, "this route needs a WebSocket upgrade (ws:// or wss://)")
            if route.kind is Kind.STREAM:
                await self._stream(request, receive, send, scope)
                return
            if route.reads_body:
                request.body = await _read_body(receive, live.settings.max_body_bytes)
            if route.kind is Kind.PAGE or route.group == "health":
                reply = live.handle(route, request)  # no run files: no thread needed
            else:
                reply = await asyncio.get_running_loop().run_in_executor(None, live.handle, route, request)
        except ApiError as exc:
            reply = exc.reply()
        await self._reply(send, reply, request)

    async def _admit(self, request: ApiRequest, route: Route) -> None:
        if getattr(self.live.authorizer, "per_run", True):  # MLflow users: a database and a password hash
            await asyncio.get_running_loop().run_in_executor(None, self.live.admit, request, route)
        else:
            self.live.admit(request, route)  # a token comparison: no thread needed

    async def _reply(self, send: Send, reply: Reply, request: ApiRequest) -> None:
        reply = self.live.finish(reply, request)
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.header_items()]
        if reply.status not in (204, 304):
            headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
        if reply.status == 413:
            headers.append((b"connection", b"close"))  # the rest of the body is never read: drop the connection
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else reply.body})

    async def _stream(self, request: ApiRequest, receive: Receive, send: Send, scope: Scope) -> None:
        live = self.live
        loop = asyncio.get_running_loop()
        plan = await loop.run_in_executor(None, live.prepare_stream, request)
        headers = _STREAM_HEADERS + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in live.cors.headers(request.origin, "GET").items()
        ]
        if request.method == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        reader = await self._open(plan)
        watcher = asyncio.ensure_future(_close_on_disconnect(receive, reader))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": OPENING, "more_body": True})
            transport = (scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
            if transport is not None and scope.get("http_version") == "1.1":
                reader.direct = _ChunkedWriter(transport)
            while (batch := await reader.next_batch()) is not END:
                await send({"type": "http.response.body", "body": frame(batch), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError as exc:  # the client left mid-write
            log.debug("stream of run %s ended by the client: %r", plan.run_id, exc)
        finally:
            watcher.cancel()
            reader.close()
            live.release_stream()

    async def _open(self, plan: StreamPlan) -> AsyncEventStream:
        """A reader of the planned stream, holding one of the process's stream slots (raises ApiError)."""
        self.live.acquire_stream()
        try:
            return await self.live.fanout.open(plan.run_id, plan.make_source, plan.after_id)
        except BaseException as exc:
            self.live.release_stream()
            if isinstance(exc, OSError):
                raise ApiError(404, f"the events of run {plan.run_id!r} cannot be read: {type(exc).__name__}") from None
            raise

    # -- WebSocket ----------------------------------------------------------------------------
    async def _websocket(self, route: Route, request: ApiRequest, receive: Receive, send: Send, scope: Scope) -> None:
        live = self.live
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        try:
            if route.kind is not Kind.WEBSOCKET:
                raise ApiError(404, f"no WebSocket at {request.path!r}; see /api/training/<run_id>/ws")
            await self._admit(request, route)
            plan = await asyncio.get_running_loop().run_in_executor(None, live.prepare_stream, request)
            reader = await self._open(plan)
        except ApiError as exc:
            await _deny(scope, send, exc)
            return
        lock = asyncio.Lock()  # the event sender and the reply sender share one socket

        async def send_text(text: str) -> None:
            async with lock:
                await send({"type": "websocket.send", "text": text})

        answering: asyncio.Future[None] | None = None
        try:
            await send({"type": "websocket.accept"})
            answering = asyncio.ensure_future(self._answer(request, receive, send_text, reader))
            while (batch := await reader.next_batch()) is not END:
                for event in batch or ():  # a heartbeat (None) sends nothing: the server pings
                    await send_text(event_json(event))
            async with lock:
                await send({"type": "websocket.close", "code": 1000})
        except OSError as exc:  # ClientDisconnected: the client left mid-send
            log.debug("WebSocket of run %s ended by the client: %r", plan.run_id, exc)
        finally:
            if answering is not None:
                answering.cancel()
            reader.close()
            live.release_stream()

    async def _answer(self, request: ApiRequest, receive: Receive, send_text: Callable[[str], Awaitable[None]],
                      reader: AsyncEventStream) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break  # websocket.disconnect
                text = message.get("text") if message.get("text") is not None else message.get("bytes")
                reply = await loop.run_in_executor(None, self.live.ws_reply, request, text)
                await send_text(dumps_strict(reply))
        except OSError:
            pass
        finally:
            reader.close()

    # -- lifespan (when nothing else serves it) --------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.live.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _ChunkedWriter:
    """Writes SSE frames straight to the connection, as chunks of the response uvicorn started.

    Only under ``trackbridge serve``'s protocol, which hands the transport over in the scope
    (:data:`TRANSPORT_EXTENSION`); the fan-out's pass then writes each reader's batch itself. A
    client whose unsent bytes pile up is not written to (its reader catches up from the log instead).
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def writable(self) -> bool:
        return not self.transport.is_closing() and self.transport.get_write_buffer_size() < MAX_UNSENT_BYTES

    def write(self, events: list[dict[str, Any]]) -> None:
        body = frame(events)
        self.transport.write(b"%x\r\n%b\r\n" % (len(body), body))


def _app_path(scope: Scope) -> str:
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    return path[len(root):] or "/" if root and path.startswith(root) else path


def _request(scope: Scope, path: str) -> ApiRequest:
    headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ()))
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)[::-1])
    server = scope.get("server")
    return ApiRequest(
        method=scope.get("method", "GET"),
        path=path,
        headers=headers,
        query=query,
        root_path=scope.get("root_path") or "",
        local_address=server[0] if server else None,
        is_websocket=scope["type"] == "websocket",
    )


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 past it: a chunked body has no Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BODY_TIMEOUT_S
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s") from None
        if message["type"] != "http.request":
            raise ApiError(400, "the client left before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _close_on_disconnect(receive: Receive, reader: AsyncEventStream) -> None:
    """Wait for the client to leave (``http.disconnect``), then end its reader."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        reader.close()


async def _deny(scope: Scope, send: Send, error: ApiError) -> None:
    """Refuse a WebSocket handshake with the JSON error where the server can say it, else close (policy)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        reply = error.reply()
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.header_items()]
        await send({"type": "websocket.http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": reply.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
