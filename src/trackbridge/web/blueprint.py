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

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request
from flask_sock import Sock
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, Rule, WebsocketMismatch

from ..events.broker import EventBroker
from ..events.hub import EventHub
from ..record.jsonio import dumps_strict
from ..record.run_dir import RunNotFoundError
from .auth import CHALLENGE, UNAUTHORIZED, token_ok
from .catalog import RunCatalog
from .cors import CrossOriginPolicy
from .protocol import ApiError, api_call, open_stream, parse_last_event_id, ws_reply
from .settings import WebSettings
from .sse import SSEBody, event_json

log = logging.getLogger(__name__)

API_BLUEPRINT = "trackbridge_api"
STREAM_PATH = "/api/training/<run_id>/stream"
WS_PATH = "/api/training/<run_id>/ws"
# How often a WebSocket handler looks for client messages while no event comes.
WS_TICK_S = 0.5
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


@dataclass(frozen=True)
class LiveApi:
    """What one mounted blueprint serves from; kept in ``app.extensions[<blueprint name>]``.

    The native ASGI routes (:mod:`.asgi`) serve the same streams from it.
    """

    settings: WebSettings
    catalog: RunCatalog
    hub: EventHub
    policy: CrossOriginPolicy


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
    poll_interval_s: float = 0.02,
    name: str = API_BLUEPRINT,
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
    live = LiveApi(settings, catalog, hub, policy)
    bp = Blueprint(name, __name__)
    sock = Sock()
    route_map = Map(
        [Rule(path, methods=methods, endpoint=path, websocket=path == WS_PATH) for path, methods in _ROUTES]
    )

    @bp.record_once
    def _install(state: Any) -> None:
        state.app.url_map.converters.setdefault(_ANY_PATH, _AnyPath)
        state.app.extensions[name] = live

    # -- guards ------------------------------------------------------------------
    @bp.before_request
    def _guard() -> Response | None:
        if request.method == "OPTIONS":
            return Response(status=204)  # a CORS preflight carries no token; _cors adds the headers
        if not token_ok(request.headers, request.args, settings.token):
            return error_response(401, UNAUTHORIZED, CHALLENGE)
        if request.method == "POST" or _is_websocket():
            reason = policy.refusal(request.headers.get("Origin"), request.host)
            if reason:
                return error_response(403, reason)
        return None

    @bp.after_request
    def _cors(response: Response) -> Response:
        response.headers.update(policy.headers(request.headers.get("Origin"), request.method))
        return response

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 400, exc.description or exc.name)

    # -- runs --------------------------------------------------------------------
    @bp.get("/api/runs", strict_slashes=False)
    def runs() -> Response:
        return json_response({"runs": catalog.list_runs()})

    @bp.get("/api/runs/<run_id>")
    def run(run_id: str) -> Response:
        return json_response(api_call(catalog.run, run_id))

    @bp.get("/api/runs/<run_id>/metrics")
    def metrics(run_id: str) -> Response:
        return json_response(api_call(catalog.metrics, run_id))

    @bp.post("/api/runs/<run_id>/stop")
    def stop(run_id: str) -> Response:
        return json_response(api_call(catalog.request_stop, run_id, "api"), 202)

    @bp.post("/api/runs/<run_id>/register")
    def register(run_id: str) -> Response:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(400, 'send a JSON body {"name": "<model name>", "alias": "champion"}')
        alias = body.get("alias", "champion")
        if not isinstance(alias, str) or not alias:
            raise ApiError(400, "`alias` must be a non-empty string")
        run_dir = api_call(_local_or_404, catalog, run_id)
        # No tracking URI: the version goes to the MLflow the run is mirrored to (its run.json says which).
        return json_response(_register(run_dir, body["name"], alias), 201)

    # -- live events -------------------------------------------------------------
    @bp.get(STREAM_PATH)
    def stream(run_id: str) -> Response:
        after_id = _last_event_id()
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        if request.method == "HEAD":  # no body: don't hold a thread on a stream nobody reads
            api_call(catalog.event_source, run_id)
            return Response(mimetype="text/event-stream", headers=headers)
        catalog.sweep_dead_runs()
        events = open_stream(catalog, hub, run_id, after_id, settings.heartbeat_s, mark_idle=True)
        return Response(
            SSEBody(events),
            mimetype="text/event-stream",
            headers=headers,
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
        api_call(catalog.event_source, (request.view_args or {}).get("run_id"))
        return None

    @sock.route(WS_PATH, bp=bp)
    def websocket(ws: Any, run_id: str) -> None:
        try:
            events = open_stream(catalog, hub, run_id, _last_event_id(), WS_TICK_S)
        except ApiError as exc:  # the run vanished between the handshake and now
            ws.send(dumps_strict({"type": "error", "error": exc.message, "status": exc.status}))
            return
        with events:
            for event in events:
                if event is not None:
                    ws.send(event_json(event))
                    continue
                if not ws.connected:
                    return
                while (message := ws.receive(timeout=0)) is not None:
                    ws.send(dumps_strict(ws_reply(catalog, run_id, message)))

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
    return parse_last_event_id(request.headers.get("Last-Event-ID"), request.args.get("last_event_id"))


def _local_or_404(catalog: RunCatalog, run_id: str) -> Any:
    run_dir = catalog.local(run_id)
    if run_dir is None:
        raise RunNotFoundError(f"no run {run_id!r} in this server's runs root")
    return run_dir


def _register(run_dir: Any, name: str, alias: str) -> dict[str, Any]:
    try:
        from ..mirror.client import MLFLOW_ERRORS
        from ..mirror.registry import RegistrationError
        from ..mirror.sync import register_run
    except ImportError as exc:  # MLflow is not installed
        raise ApiError(501, f"model registration is not available: {exc}") from None
    try:
        return register_run(run_dir, name, alias=alias)
    except RegistrationError as exc:
        raise ApiError(409, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except MLFLOW_ERRORS as exc:  # the tracking server is down or refused
        raise ApiError(503, f"MLflow could not register run {run_dir.run_id!r}: {type(exc).__name__}: {exc}") from None


__all__ = ["API_BLUEPRINT", "LiveApi", "create_blueprint", "error_response", "json_response"]
