"""LiveApi: the live API's behaviour behind every transport — the guard, the handlers, the stream rules.

Each row of the route table (:mod:`.routes`) names a method here. A
transport builds an :class:`~trackbridge.web.http.ApiRequest`, calls
:meth:`LiveApi.admit` (Host, body size, credentials, cross-site control),
then :meth:`LiveApi.handle` for a JSON or page route (blocking file I/O: an
asyncio transport runs it in a worker thread), or
:meth:`LiveApi.prepare_stream` and its own driver for a stream. So the
Flask blueprint and the ASGI app answer every request the same way.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..events.broker import EventBroker
from ..events.fanout import AsyncFanout
from ..events.hub import EventHub, SourceFactory
from ..events.sources import SourceUnavailableError
from ..record.ids import InvalidRunIdError
from ..record.run_dir import RunNotFoundError
from .auth import Authorizer, Principal, TokenAuthorizer, token_cookie
from .catalog import RunCatalog, RunConflictError
from .cors import CrossOriginPolicy
from .dashboard import DashboardPage
from .files import UnsafePathError
from .hosts import HostPolicy
from .http import ApiError, ApiRequest, Reply, json_reply
from .routes import Access, Kind, Route, RouteMap
from .settings import WebSettings

log = logging.getLogger(__name__)

_LAST_EVENT_ID = re.compile(r"\d{1,18}")
STOP_MESSAGE = {"type": "stop"}
MEDIA_MAX_AGE_S = 60
# Types a media file is served as; anything else is a download (never rendered by the browser).
_MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".json": "application/json", ".csv": "text/csv; charset=utf-8", ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class StreamPlan:
    """What a transport needs to open a stream: the run, where its events come from, and where to start."""

    run_id: str
    after_id: int
    make_source: SourceFactory


class LiveApi:
    """The state of one mounted live API: settings, catalog, hub, policies, the open-stream count."""

    def __init__(
        self,
        settings: WebSettings,
        *,
        broker: EventBroker | None = None,
        authorizer: Authorizer | None = None,
        page_prefix: str = "/",
        api_path: str = "/api",
        with_health: bool = True,
    ) -> None:
        self.settings = settings
        self.catalog = RunCatalog(settings)
        self.hub = EventHub(broker)
        self.fanout = AsyncFanout(self.hub, tick_s=settings.heartbeat_s)
        self.cors = CrossOriginPolicy(settings.cors_origins)
        self.hosts = HostPolicy(settings.allowed_hosts)
        self.authorizer: Authorizer = authorizer or TokenAuthorizer(settings.token)
        self.routes = RouteMap(page_prefix=page_prefix, with_health=with_health)
        self.page = DashboardPage(api_path, page_prefix)
        self._streams = 0
        self._streams_lock = threading.Lock()

    # -- the guard: every request, before its handler ------------------------------------
    def admit(self, request: ApiRequest, route: Route) -> None:
        """Raise ApiError unless the request may reach ``route``'s handler (sets ``request.principal``)."""
        if route.access is not Access.PUBLIC and not self.hosts.allows(request.host, request.local_address):
            raise ApiError(
                403,
                f"Host {request.host[:80]!r} is not allowed (DNS rebinding?); allow it with --allowed-hosts "
                "or TRACKBRIDGE_ALLOWED_HOSTS",
            )
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise ApiError(400, "Content-Length must be a non-negative integer")
            if int(length) > self.settings.max_body_bytes:
                raise ApiError(413, f"request body over {self.settings.max_body_bytes} bytes")
        if route.access is Access.PUBLIC:
            request.principal = Principal(admin=False)
            return
        request.principal = self.authorizer.authenticate(request)
        if route.state_changing or route.kind is Kind.WEBSOCKET:
            reason = self.cors.refusal(request, explicit_token=request.principal.explicit)
            if reason:
                raise ApiError(403, reason)

    def preflight(self, request: ApiRequest) -> Reply:
        """A CORS preflight (OPTIONS) carries no credentials: 204, with CORS headers for an allowed origin."""
        return Reply(204, b"", self.cors.headers(request.origin, "OPTIONS"), content_type="")

    def finish(self, reply: Reply, request: ApiRequest) -> Reply:
        """Headers every reply gets: CORS (for allowed origins only)."""
        reply.headers.update(self.cors.headers(request.origin, request.method))
        return reply

    def handle(self, route: Route, request: ApiRequest) -> Reply:
        """The reply of a JSON or page route (blocking). Errors become JSON 4xx/503 replies."""
        try:
            handler: Callable[[ApiRequest], Reply] = getattr(self, route.name)
            return handler(request)
        except ApiError as exc:
            return exc.reply()

    # -- JSON routes -------------------------------------------------------------------------
    def health(self, request: ApiRequest) -> Reply:
        return json_reply({"status": "ok"})

    def runs(self, request: ApiRequest) -> Reply:
        principal = request.principal
        if not getattr(self.authorizer, "per_run", True):
            return json_reply({"runs": self.catalog.list_runs()})
        readable = lambda run: self.authorizer.can(principal, Access.READ, run)  # noqa: E731
        return json_reply({"runs": self.catalog.list_runs(readable)})

    def run(self, request: ApiRequest) -> Reply:
        run = call(self.catalog.run, request.params["run_id"])
        self._check(request, Access.READ, run)
        return json_reply(run)

    def metrics(self, request: ApiRequest) -> Reply:
        run_id = self.require(request, Access.READ)
        return json_reply(call(self.catalog.metrics, run_id))

    def media(self, request: ApiRequest) -> Reply:
        run_id = self.require(request, Access.READ)
        return json_reply(call(self.catalog.media, run_id))

    def system(self, request: ApiRequest) -> Reply:
        run_id = self.require(request, Access.READ)
        return json_reply(call(self.catalog.system, run_id))

    def media_file(self, request: ApiRequest) -> Reply:
        run_id = self.require(request, Access.READ)
        path = request.params["path"]
        data, info = call(self.catalog.media_file, run_id, path)
        etag = f'"{info.inode:x}-{info.size:x}-{info.mtime_ns:x}"'
        suffix = ("." + path.rsplit(".", 1)[-1].lower()) if "." in path else ""
        headers = {
            "ETag": etag,
            "Cache-Control": f"private, max-age={MEDIA_MAX_AGE_S}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        content_type = _MEDIA_TYPES.get(suffix)
        if content_type is None:
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
            headers["Content-Disposition"] = "attachment"
        if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
            return Reply(304, b"", headers, content_type="")
        return Reply(200, data, headers, content_type=content_type)

    def stop(self, request: ApiRequest) -> Reply:
        run_id = self.require(request, Access.EDIT)
        return json_reply(call(self.catalog.request_stop, run_id, "api"), 202)

    def register(self, request: ApiRequest) -> Reply:
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(400, 'send a JSON body {"name": "<model name>", "alias": "champion"}')
        alias = body.get("alias", "champion")
        if not isinstance(alias, str) or not alias:
            raise ApiError(400, "`alias` must be a non-empty string")
        run_id = self.require(request, Access.EDIT)
        run_dir = call(self.catalog.local_or_404, run_id)
        # No tracking URI: the version goes to the MLflow the run is mirrored to (its run.json says which).
        return json_reply(_register(run_dir, body["name"], alias), 201)

    # -- the page ---------------------------------------------------------------------------
    def runs_page(self, request: ApiRequest) -> Reply:
        return self._with_cookie(self.page.runs_page(request), request)

    def run_page(self, request: ApiRequest) -> Reply:
        try:
            reply = self.page.run_page(request)
        except InvalidRunIdError as exc:
            raise ApiError(400, str(exc)) from None
        return self._with_cookie(reply, request)

    def compare_page(self, request: ApiRequest) -> Reply:
        try:
            reply = self.page.compare_page(request)
        except InvalidRunIdError as exc:
            raise ApiError(400, str(exc)) from None
        return self._with_cookie(reply, request)

    def asset(self, request: ApiRequest) -> Reply:
        return self.page.asset(request)

    def _with_cookie(self, reply: Reply, request: ApiRequest) -> Reply:
        """A page opened with a valid ``?token=`` sets the cookie its own requests then carry."""
        principal = request.principal
        token = getattr(self.authorizer, "token", None)
        if token and principal is not None and principal.via == "query":
            secure = request.headers.get("x-forwarded-proto", "").lower() == "https"
            reply.headers["Set-Cookie"] = token_cookie(token, secure=secure)
        return reply

    # -- streams -----------------------------------------------------------------------------
    def prepare_stream(self, request: ApiRequest) -> StreamPlan:
        """Validate a stream request and find its source (blocking; raises ApiError)."""
        after_id = parse_last_event_id(request.headers.get("last-event-id"), request.query.get("last_event_id"))
        run_id = self.require(request, Access.READ)
        make_source = call(self.catalog.event_source, run_id)
        return StreamPlan(run_id, after_id, make_source)

    def acquire_stream(self) -> None:
        """Take one of the process's ``max_streams`` slots, or raise 503 with Retry-After."""
        with self._streams_lock:
            if self._streams >= self.settings.max_streams:
                raise ApiError(
                    503,
                    f"this server holds its maximum of {self.settings.max_streams} open streams; retry later",
                    {"Retry-After": str(self.settings.retry_after_s)},
                )
            self._streams += 1

    def release_stream(self) -> None:
        with self._streams_lock:
            self._streams -= 1

    @property
    def open_streams(self) -> int:
        return self._streams

    def ws_reply(self, request: ApiRequest, message: str | bytes | None) -> dict[str, Any]:
        """The answer to a WebSocket client's message: ``{"type": "stop"}`` is the one it may send."""
        try:
            data = json.loads(message) if message is not None else None
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("type") != STOP_MESSAGE["type"]:
            return {"type": "error", "error": 'unknown message; send {"type": "stop"} to stop the run', "status": 400}
        try:
            run_id = self.require(request, Access.EDIT)
            return {"type": "stop_requested", **call(self.catalog.request_stop, run_id, "websocket")}
        except ApiError as exc:
            return {"type": "error", "error": exc.message, "status": exc.status}

    def close(self) -> None:
        """End every open stream and WebSocket (the server is shutting down)."""
        self.hub.close()

    # -- access to one run --------------------------------------------------------------------
    def require(self, request: ApiRequest, access: Access) -> str:
        """The request's run id, once the caller is known to have ``access`` to the run."""
        run_id = request.params["run_id"]
        if not getattr(self.authorizer, "per_run", True):
            call(self.catalog.local, run_id)  # validates the id (400) and refuses symlinks (403)
            return run_id
        self._check(request, access, call(self.catalog.run, run_id))
        return run_id

    def _check(self, request: ApiRequest, access: Access, run: Mapping[str, Any]) -> None:
        if not self.authorizer.can(request.principal, access, run):
            needed = "EDIT (or MANAGE)" if access is Access.EDIT else "READ"
            raise ApiError(403, f"permission denied: this needs {needed} on the run's MLflow experiment")


def call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a catalog call; its errors become ApiErrors: 400 bad id, 403 symlink, 404 unknown, 409 conflict, 503 MLflow down."""
    try:
        return function(*args)
    except InvalidRunIdError as exc:
        raise ApiError(400, str(exc)) from None
    except RunNotFoundError as exc:
        raise ApiError(404, str(exc)) from None
    except UnsafePathError as exc:
        raise ApiError(403, f"not served: {exc}") from None
    except RunConflictError as exc:
        raise ApiError(409, str(exc)) from None
    except SourceUnavailableError as exc:
        raise ApiError(503, str(exc)) from None
    except (OSError, ValueError) as exc:  # a run.json being replaced, unreadable, or not JSON
        run_id = args[0] if args and isinstance(args[0], str) else "?"
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
