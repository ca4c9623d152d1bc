"""create_blueprint: the live API as a Flask Blueprint — the WSGI transport of the route table.

For a Flask app of your own, and for ``mlflow server --app-name trackbridge``
in its gunicorn and waitress modes. Every rule comes from
:data:`~trackbridge.web.routes.ROUTES`; every answer from
:class:`~trackbridge.web.api.LiveApi` (the same as the ASGI app's). A stream
holds a thread here (the blocking driver,
:class:`~trackbridge.events.stream.EventStream`); the WebSocket needs a
server that hands over its raw socket (gunicorn ``gthread``; flask-sock).

Every error is JSON ``{"error": ..., "status": ...}`` with a 4xx status
(503 when the MLflow server a run lives in cannot be reached, or the stream
cap is reached), also for unknown paths and wrong methods under
``/api/runs`` and ``/api/training``, whatever app the blueprint is mounted on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Blueprint, Response, g, request
from flask_sock import Sock
from werkzeug.routing import BaseConverter

from ..events.broker import EventBroker
from ..events.stream import EventStream
from ..record.jsonio import dumps_strict
from .api import LiveApi
from .http import ApiError, ApiRequest, Headers, Reply
from .routes import API_PREFIXES, NO_ROUTE, ROUTES, Kind, MethodNotAllowed, Route
from .settings import WebSettings
from .sse import SSEBody, event_json

log = logging.getLogger(__name__)

API_BLUEPRINT = "trackbridge_api"
# How often a WebSocket handler looks for client messages while no event comes.
WS_TICK_S = 0.5
_ANY_PATH = "trackbridge_any_path"
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class _AnyPath(BaseConverter):
    """Matches anything, slashes and the empty string included (the catch-all routes)."""

    regex = ".*"
    part_isolating = False


def create_blueprint(
    runs_root: str | None = None,
    *,
    token: str | None = None,
    cors_origins: str | tuple[str, ...] | list[str] | None = None,
    allowed_hosts: str | tuple[str, ...] | list[str] | None = None,
    tracking_uri: str | None = None,
    broker: EventBroker | None = None,
    heartbeat_s: float = 15.0,
    poll_interval_s: float = 0.02,
    name: str = API_BLUEPRINT,
    settings: WebSettings | None = None,
    live: LiveApi | None = None,
) -> Blueprint:
    """The live API over the runs under ``runs_root`` as a Blueprint (routes keep their ``/api`` paths).

    Arguments left out are read from the environment when this is called
    (see :class:`~trackbridge.web.settings.WebSettings`): ``TRACKBRIDGE_RUNS_ROOT``
    (default ``./runs``), ``TRACKBRIDGE_TOKEN``, ``TRACKBRIDGE_CORS_ORIGINS``,
    ``TRACKBRIDGE_ALLOWED_HOSTS``, ``MLFLOW_TRACKING_URI`` (where runs not
    readable here are looked up). ``broker``: pass
    :func:`~trackbridge.events.default_broker` when the app runs in the
    training process, so events reach clients without a poll. ``live``: the
    :class:`LiveApi` to serve (shared with a page blueprint; see :func:`mount`).
    """
    if live is None:
        if settings is None:
            settings = WebSettings.resolve(
                runs_root, token=token, cors_origins=cors_origins, allowed_hosts=allowed_hosts,
                tracking_uri=tracking_uri, heartbeat_s=heartbeat_s, poll_interval_s=poll_interval_s,
            )
        live = LiveApi(settings, broker=broker)
    bp = Blueprint(name, __name__)
    sock = Sock()

    @bp.record_once
    def _install(state: Any) -> None:
        state.app.url_map.converters.setdefault(_ANY_PATH, _AnyPath)
        state.app.extensions[name] = live

    for route in live.routes.routes:
        if route.group != "api":
            continue
        if route.kind is Kind.WEBSOCKET:
            _add_websocket(bp, sock, live, route)
        else:
            bp.add_url_rule(
                route.flask_rule(), route.name, _view(live, route),
                methods=[*route.methods, "OPTIONS"], strict_slashes=False, provide_automatic_options=False,
            )

    # JSON for every other path or method under the API's prefixes.
    def unknown(rest: str) -> Response:
        return to_flask(_unknown(live, flask_request()))

    for prefix in API_PREFIXES:
        bp.add_url_rule(f"{prefix}/<{_ANY_PATH}:rest>", f"unknown_{prefix.rsplit('/', 1)[-1]}", unknown,
                        methods=_ALL_METHODS, merge_slashes=False, provide_automatic_options=False)
    return bp


def create_page_blueprint(
    live: LiveApi | None = None, *, api_path: str = "/api", token: str | None = None, name: str = "trackbridge_dashboard"
) -> Blueprint:
    """The dashboard page (the ``page`` rows of the route table) as a Blueprint; register it at its prefix."""
    standalone = live is None
    if live is None:
        live = LiveApi(WebSettings.resolve(token=token), api_path=api_path)
    bp = Blueprint(name, __name__)

    @bp.record_once
    def _prefix(state: Any) -> None:
        if standalone:  # registered by hand: the page's own links start where it was mounted
            live.page.page_prefix = "/" + (state.url_prefix or "/").strip("/")

    for route in live.routes.routes:
        if route.group == "page":
            bp.add_url_rule(route.flask_rule(), route.name, _view(live, route), methods=list(route.methods))
    return bp


def create_health_view(live: LiveApi) -> Callable[[], Response]:
    """``GET /health`` of the route table, for an app that serves the blueprint at its root."""
    return _view(live, next(r for r in ROUTES if r.group == "health"))


# -- request and reply ---------------------------------------------------------------------
def flask_request() -> ApiRequest:
    """The current Flask request as the API sees it."""
    environ = request.environ
    return ApiRequest(
        method=request.method,
        path=request.path,
        headers=Headers(request.headers.items()),
        query=request.args.to_dict(flat=True),
        root_path=request.script_root,
        local_address=_local_address(environ),
        is_websocket=request.headers.get("Upgrade", "").lower() == "websocket",
        params=dict(request.view_args or {}),
    )


def to_flask(reply: Reply) -> Response:
    response = Response(reply.body, status=reply.status, headers=reply.headers)
    if reply.content_type:
        response.headers["Content-Type"] = reply.content_type
    else:
        del response.headers["Content-Type"]
    return response


def _view(live: LiveApi, route: Route) -> Callable[..., Response]:
    def view(**params: str) -> Response:
        api_request = flask_request()
        if api_request.method == "OPTIONS":
            return to_flask(live.preflight(api_request))
        try:
            live.admit(api_request, route)
            if route.reads_body:  # at most the cap, Content-Length or not (a chunked body has none)
                api_request.body = request.stream.read(live.settings.max_body_bytes + 1)
                if len(api_request.body) > live.settings.max_body_bytes:
                    raise ApiError(413, f"request body over {live.settings.max_body_bytes} bytes")
            if route.kind is Kind.STREAM:
                return _stream(live, api_request)
            reply = live.handle(route, api_request)
        except ApiError as exc:
            reply = exc.reply()
        return to_flask(live.finish(reply, api_request))

    view.__name__ = route.name
    return view


def _stream(live: LiveApi, api_request: ApiRequest) -> Response:
    plan = live.prepare_stream(api_request)
    headers = {**_STREAM_HEADERS, **live.cors.headers(api_request.origin, api_request.method)}
    if api_request.method == "HEAD":  # no body: don't hold a thread on a stream nobody reads
        return Response(mimetype="text/event-stream", headers=headers)
    live.acquire_stream()
    try:
        events = EventStream(
            live.hub, plan.run_id, plan.make_source, plan.after_id, tick_s=live.settings.heartbeat_s, mark_idle=True
        )
    except BaseException as exc:
        live.release_stream()
        if isinstance(exc, OSError):
            raise ApiError(404, f"the events of run {plan.run_id!r} cannot be read: {type(exc).__name__}") from None
        raise
    return Response(SSEBody(events, on_close=live.release_stream), mimetype="text/event-stream", headers=headers)


def _unknown(live: LiveApi, api_request: ApiRequest) -> Reply:
    try:
        live.admit(api_request, NO_ROUTE)
    except ApiError as exc:
        return exc.reply()
    try:
        matched = live.routes.match(api_request.method, api_request.path)
    except MethodNotAllowed as exc:
        allowed = ", ".join(exc.allowed)
        return ApiError(405, f"{api_request.method} is not allowed here; use {allowed}", {"Allow": allowed}).reply()
    if matched is not None and matched[0].kind is Kind.WEBSOCKET:
        return ApiError(400, "this route needs a WebSocket upgrade (ws:// or wss://)").reply()
    return ApiError(404, f"no route {api_request.path!r}; see GET /api/runs").reply()


# -- the WebSocket (flask-sock) ----------------------------------------------------------------
def _add_websocket(bp: Blueprint, sock: Sock, live: LiveApi, route: Route) -> None:
    endpoint = f"{bp.name}.{route.name}"

    # Refuse a WebSocket with a plain JSON answer before the upgrade: a foreign Host or
    # Origin (403), an unknown run (404), a bad Last-Event-ID (400), the stream cap (503),
    # or a server without the raw socket an upgrade needs (waitress, an ASGI bridge: 501).
    @bp.before_request
    def _ws_preflight() -> Response | None:
        if request.endpoint != endpoint:
            return None
        api_request = flask_request()
        try:
            live.admit(api_request, route)
            if not _has_raw_socket():
                raise ApiError(
                    501,
                    "this server cannot carry WebSockets; use the SSE stream, or serve with `trackbridge serve`",
                )
            g.trackbridge_ws = (api_request, live.prepare_stream(api_request))
            live.acquire_stream()
        except ApiError as exc:
            return to_flask(exc.reply())
        return None

    @sock.route(route.flask_rule(), bp=bp, endpoint=route.name)
    def websocket(ws: Any, run_id: str) -> None:
        api_request, plan = g.trackbridge_ws
        try:
            try:
                events = EventStream(live.hub, plan.run_id, plan.make_source, plan.after_id, tick_s=WS_TICK_S)
            except OSError as exc:  # the run vanished between the handshake and now
                ws.send(dumps_strict({"type": "error", "error": str(exc), "status": 404}))
                return
            with events:
                for event in events:
                    if event is not None:
                        ws.send(event_json(event))
                        continue
                    if not ws.connected:
                        return
                    while (message := ws.receive(timeout=0)) is not None:
                        ws.send(dumps_strict(live.ws_reply(api_request, message)))
        finally:
            live.release_stream()


def _has_raw_socket() -> bool:
    environ = request.environ
    return (
        "werkzeug.socket" in environ
        or "gunicorn.socket" in environ
        or "eventlet.input" in environ
        or environ.get("SERVER_SOFTWARE", "").startswith("gevent")
    )


def _local_address(environ: dict[str, Any]) -> str | None:
    """The IP this connection came in on, from the server's raw socket when it gives one."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    try:
        return sock.getsockname()[0] if sock is not None else None
    except (OSError, AttributeError, IndexError):
        return None


__all__ = ["API_BLUEPRINT", "create_blueprint", "create_page_blueprint", "flask_request", "to_flask"]
