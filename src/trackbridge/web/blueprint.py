"""create_blueprint: the live API of DESIGN §5 as a Flask Blueprint.

| route | what |
|---|---|
| ``GET /api/runs`` | ``{"runs": [summary, ...]}``, newest first, each with ``mlflow_url`` |
| ``GET /api/runs/<run_id>`` | run.json, plus ``mlflow_url`` |
| ``GET /api/runs/<run_id>/metrics`` | metrics.json: ``{"epochs": [...]}`` |
| ``POST /api/runs/<run_id>/stop`` | ask the run to stop at its next batch (202) |
| ``POST /api/runs/<run_id>/register`` | body ``{"name": ..., "alias": ...}``: register best.ckpt |
| ``GET /api/training/<run_id>/stream`` | SSE, from ``Last-Event-ID`` (header or ``?last_event_id=``) |
| ``WS /api/training/<run_id>/ws`` | the same events; accepts ``{"type": "stop"}`` |

Every error is JSON ``{"error": ..., "status": ...}`` with a 4xx status
(503 when the MLflow server a run lives in cannot be reached), also for
unknown paths and wrong methods under ``/api/runs`` and ``/api/training``,
whatever app the blueprint is mounted on.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable

from flask import Blueprint, Response, current_app, request
from flask_sock import Sock
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, Rule, WebsocketMismatch

from ..events.broker import EventBroker
from ..events.hub import EventHub
from ..events.sources import SourceUnavailableError
from ..events.stream import EventStream
from ..record.ids import InvalidRunIdError, validate_run_id
from ..record.jsonio import dumps_strict
from ..record.run_dir import RunNotFoundError
from .auth import token_ok
from .catalog import RunCatalog, RunConflictError
from .cors import CrossOriginPolicy
from .settings import WebSettings
from .sse import SSEBody

log = logging.getLogger(__name__)

STREAM_PATH = "/api/training/<run_id>/stream"
WS_PATH = "/api/training/<run_id>/ws"
# How often a WebSocket handler looks for client messages while no event comes.
WS_TICK_S = 0.5
_LAST_EVENT_ID = re.compile(r"\d{1,18}")
_ANY_PATH = "trackbridge_any_path"
# The blueprint's routes and methods, for telling 404 from 405 under its prefixes.
_ROUTES = (
    ("/api/runs", ("GET",)),
    ("/api/runs/<run_id>", ("GET",)),
    ("/api/runs/<run_id>/metrics", ("GET",)),
    ("/api/runs/<run_id>/stop", ("POST",)),
    ("/api/runs/<run_id>/register", ("POST",)),
    (STREAM_PATH, ("GET",)),
    (WS_PATH, ("GET",)),
)


class ApiError(Exception):
    """An error answered as JSON with an HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Strict JSON (no NaN), never cached: these are live values."""
    response = Response(dumps_strict(value), status=status, mimetype="application/json", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message, "status": status}, status, headers)


class _AnyPath(BaseConverter):
    """Matches anything, slashes and the empty string included (the catch-all routes)."""

    regex = ".*"
    part_isolating = False


def create_blueprint(
    runs_root: str | None = None,
    *,
    token: str | None = None,
    cors_origins: str | tuple[str, ...] | list[str] | None = None,
    tracking_uri: str | None = None,
    broker: EventBroker | None = None,
    heartbeat_s: float = 15.0,
    poll_interval_s: float = 0.05,
    name: str = "trackbridge_api",
    settings: WebSettings | None = None,
) -> Blueprint:
    """The live API over the runs under ``runs_root`` as a Blueprint (routes keep their ``/api`` paths).

    Arguments left out are read from the environment when this is called
    (see :class:`~trackbridge.web.settings.WebSettings`): ``TRACKBRIDGE_RUNS_ROOT``
    (default ``./runs``), ``TRACKBRIDGE_TOKEN``, ``TRACKBRIDGE_CORS_ORIGINS``,
    ``MLFLOW_TRACKING_URI`` (where runs not readable here are looked up).
    ``broker``: pass :func:`~trackbridge.events.default_broker` when the app
    runs in the training process, so events reach clients without a poll.
    """
    if settings is None:
        settings = WebSettings.resolve(
            runs_root,
            token=token,
            cors_origins=cors_origins,
            tracking_uri=tracking_uri,
            heartbeat_s=heartbeat_s,
            poll_interval_s=poll_interval_s,
        )
    catalog = RunCatalog(settings)
    hub = EventHub(broker)
    policy = CrossOriginPolicy(settings.cors_origins)
    bp = Blueprint(name, __name__)
    bp.catalog = catalog  # type: ignore[attr-defined]  # for the app (and its tests) to reach
    bp.hub = hub  # type: ignore[attr-defined]
    sock = Sock()
    route_map = Map(
        [Rule(path, methods=methods, endpoint=path, websocket=path == WS_PATH) for path, methods in _ROUTES]
    )

    @bp.record_once
    def _install_converter(state: Any) -> None:
        state.app.url_map.converters.setdefault(_ANY_PATH, _AnyPath)

    # -- guards ------------------------------------------------------------------
    @bp.before_request
    def _guard() -> Response | None:
        if request.method == "OPTIONS":
            return policy.apply(request, Response(status=204))  # CORS preflight: no token on it
        if not token_ok(request, settings.token):
            return error_response(
                401,
                "missing or wrong token: send 'Authorization: Bearer <TRACKBRIDGE_TOKEN>' or ?token=",
                {"WWW-Authenticate": 'Bearer realm="trackbridge"'},
            )
        if request.method == "POST" or _is_websocket():
            reason = policy.refuses(request)
            if reason:
                return error_response(403, reason)
        return None

    @bp.after_request
    def _cors(response: Response) -> Response:
        return policy.apply(request, response)

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 400, exc.description or exc.name)

    # -- runs --------------------------------------------------------------------
    @bp.get("/api/runs", strict_slashes=False)
    def runs() -> Response:
        return json_response({"runs": catalog.list_runs()})

    @bp.get("/api/runs/<run_id>")
    def run(run_id: str) -> Response:
        return json_response(_call(catalog.run, run_id))

    @bp.get("/api/runs/<run_id>/metrics")
    def metrics(run_id: str) -> Response:
        return json_response(_call(catalog.metrics, run_id))

    @bp.post("/api/runs/<run_id>/stop")
    def stop(run_id: str) -> Response:
        return json_response(_call(catalog.request_stop, run_id, "api"), 202)

    @bp.post("/api/runs/<run_id>/register")
    def register(run_id: str) -> Response:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(400, 'send a JSON body {"name": "<model name>", "alias": "champion"}')
        alias = body.get("alias", "champion")
        if not isinstance(alias, str) or not alias:
            raise ApiError(400, "`alias` must be a non-empty string")
        run_dir = _call(_local_or_404, catalog, run_id)
        # No tracking URI: the version goes to the MLflow the run is mirrored to (its run.json says which).
        return json_response(_register(run_dir, body["name"], alias), 201)

    # -- live events -------------------------------------------------------------
    @bp.get(STREAM_PATH)
    def stream(run_id: str) -> Response:
        after_id = _last_event_id()
        catalog.sweep_dead_runs()
        events = _open_stream(catalog, hub, run_id, after_id, settings.heartbeat_s)
        return Response(
            SSEBody(events),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # Refuse a WebSocket with a plain JSON answer before the upgrade: an unknown
    # run (404), a bad Last-Event-ID (400), or a server without the raw socket
    # an upgrade needs (waitress, an ASGI bridge: 501).
    @bp.before_request
    def _ws_preflight() -> Response | None:
        if request.endpoint != f"{name}.websocket":
            return None
        if not _has_raw_socket():
            return error_response(
                501,
                "this server cannot carry WebSockets; use the SSE stream, or serve with "
                "`trackbridge serve` (gunicorn gthread)",
            )
        _last_event_id()
        _call(catalog.event_source, (request.view_args or {}).get("run_id"))
        return None

    @sock.route(WS_PATH, bp=bp)
    def websocket(ws: Any, run_id: str) -> None:
        try:
            events = _open_stream(catalog, hub, run_id, _last_event_id(), WS_TICK_S)
        except ApiError as exc:  # the run vanished between the handshake and now
            ws.send(dumps_strict({"type": "error", "error": exc.message, "status": exc.status}))
            return
        with events:
            for event in events:
                if event is not None:
                    ws.send(dumps_strict(event))
                    continue
                if not ws.connected:
                    return
                while (message := ws.receive(timeout=0)) is not None:
                    ws.send(dumps_strict(_ws_message(catalog, run_id, message)))

    # -- JSON for every other path under the API's prefixes ------------------------------
    @bp.route(f"/api/runs/<{_ANY_PATH}:rest>", methods=_ALL_METHODS, merge_slashes=False)
    @bp.route(f"/api/training/<{_ANY_PATH}:rest>", methods=_ALL_METHODS, merge_slashes=False)
    def unknown(rest: str) -> Response:
        adapter = route_map.bind("localhost")
        try:
            adapter.match(request.path, method=request.method, websocket=False)
        except WebsocketMismatch:
            return error_response(400, "this route needs a WebSocket upgrade (ws:// or wss://)")
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or ()))
            return error_response(405, f"{request.method} is not allowed here; use {allowed}", {"Allow": allowed})
        except (NotFound, HTTPException):
            pass
        return error_response(404, f"no route {request.path!r}; see GET /api/runs")

    return bp


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _is_websocket() -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _has_raw_socket() -> bool:
    environ = request.environ
    return (
        "werkzeug.socket" in environ
        or "gunicorn.socket" in environ
        or "eventlet.input" in environ
        or environ.get("SERVER_SOFTWARE", "").startswith("gevent")
    )


def _last_event_id() -> int:
    """``Last-Event-ID`` (a browser's reconnect) wins over ``?last_event_id=`` (the first connect)."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        raw = request.args.get("last_event_id", "")
    raw = raw.strip()
    if raw == "":
        return 0
    if not _LAST_EVENT_ID.fullmatch(raw):
        raise ApiError(400, f"Last-Event-ID must be a non-negative integer (an event id), got {raw[:40]!r}")
    return int(raw)


def _open_stream(catalog: RunCatalog, hub: EventHub, run_id: str, after_id: int, tick_s: float) -> EventStream:
    make_source = _call(catalog.event_source, run_id)
    try:
        return EventStream(hub, run_id, make_source, after_id, tick_s=tick_s)
    except SourceUnavailableError as exc:
        raise ApiError(503, str(exc)) from None
    except OSError as exc:
        raise ApiError(404, f"the events of run {run_id!r} cannot be read: {type(exc).__name__}") from None


def _local_or_404(catalog: RunCatalog, run_id: str) -> Any:
    run_dir = catalog.local(run_id)
    if run_dir is None:
        raise RunNotFoundError(f"no run {run_id!r} in this server's runs root")
    return run_dir


def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a catalog call, turning its errors into JSON ones."""
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


def _ws_message(catalog: RunCatalog, run_id: str, message: str | bytes) -> dict[str, Any]:
    """The answer to a client message: ``{"type": "stop"}`` is the one it may send."""
    try:
        data = json.loads(message)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("type") != "stop":
        return {"type": "error", "error": 'unknown message; send {"type": "stop"} to stop the run', "status": 400}
    try:
        return {"type": "stop_requested", **_call(catalog.request_stop, run_id, "websocket")}
    except ApiError as exc:
        return {"type": "error", "error": exc.message, "status": exc.status}


def _register(run_dir: Any, name: str, alias: str) -> dict[str, Any]:
    try:
        from ..mirror.registry import RegistrationError, register_run
    except ImportError as exc:
        raise ApiError(501, f"model registration is not available: {exc}") from None
    try:
        return register_run(run_dir, name, alias=alias)
    except RegistrationError as exc:
        raise ApiError(409, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


__all__ = ["ApiError", "create_blueprint", "error_response", "json_response"]
