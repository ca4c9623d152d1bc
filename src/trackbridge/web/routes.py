"""The one table of the live API's routes (DESIGN §5): every transport reads it.

The Flask blueprint registers a URL rule per row, the ASGI app matches
requests against the same rows, and the CLI help and the README list them.
A row says what a route is (its kind), what it needs from the caller
(:class:`Access`), and which :class:`~trackbridge.web.api.LiveApi` method
answers it (``name``). Paths use ``{param}`` and ``{param:path}`` (slashes
allowed) placeholders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    JSON = "json"  # a JSON reply (or a file: media)
    STREAM = "stream"  # server-sent events
    WEBSOCKET = "websocket"
    PAGE = "page"  # the dashboard's HTML and assets


class Access(str, Enum):
    """What a route needs from the caller beyond the Host check."""

    PUBLIC = "public"  # /health
    SIGNED_IN = "signed_in"  # the token (or an MLflow user); lists are filtered to what the caller may read
    READ = "read"  # READ on the run (its MLflow experiment, under trackbridge-auth)
    EDIT = "edit"  # EDIT on the run; and never cross-site


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    methods: tuple[str, ...]
    kind: Kind
    access: Access
    summary: str
    group: str = "api"  # "api" (at /), "page" (at the page prefix), "health"
    reads_body: bool = False

    @property
    def state_changing(self) -> bool:
        return self.access is Access.EDIT

    def pattern(self, prefix: str = "") -> re.Pattern[str]:
        return _compile(prefix.rstrip("/") + self.path)

    def flask_rule(self, prefix: str = "") -> str:
        rule = prefix.rstrip("/") + self.path
        rule = re.sub(r"\{(\w+):path\}", r"<path:\1>", rule)
        return re.sub(r"\{(\w+)\}", r"<\1>", rule)


ROUTES: tuple[Route, ...] = (
    Route("health", "/health", ("GET",), Kind.JSON, Access.PUBLIC, "liveness of the server", group="health"),
    Route("runs", "/api/runs", ("GET",), Kind.JSON, Access.SIGNED_IN, "runs, newest first, with MLflow UI links"),
    Route("run", "/api/runs/{run_id}", ("GET",), Kind.JSON, Access.READ, "run.json (status derived for a dead run)"),
    Route("metrics", "/api/runs/{run_id}/metrics", ("GET",), Kind.JSON, Access.READ, "metrics.json"),
    Route("media", "/api/runs/{run_id}/media", ("GET",), Kind.JSON, Access.READ, "media.jsonl as JSON"),
    Route("media_file", "/api/runs/{run_id}/media/{path:path}", ("GET",), Kind.JSON, Access.READ,
          "one image or data file of the run's media/ folder"),
    Route("system", "/api/runs/{run_id}/system", ("GET",), Kind.JSON, Access.READ, "system.jsonl as JSON"),
    Route("stop", "/api/runs/{run_id}/stop", ("POST",), Kind.JSON, Access.EDIT, "stop the run after its current batch"),
    Route("register", "/api/runs/{run_id}/register", ("POST",), Kind.JSON, Access.EDIT,
          'register its best.ckpt: {"name": ..., "alias": ...}', reads_body=True),
    Route("stream", "/api/training/{run_id}/stream", ("GET",), Kind.STREAM, Access.READ,
          "server-sent events (Last-Event-ID resumes)"),
    Route("websocket", "/api/training/{run_id}/ws", ("GET",), Kind.WEBSOCKET, Access.READ,
          'the same events; send {"type": "stop"} to stop (needs EDIT)'),
    Route("runs_page", "/", ("GET",), Kind.PAGE, Access.SIGNED_IN, "the dashboard: runs list", group="page"),
    Route("run_page", "/runs/{run_id}", ("GET",), Kind.PAGE, Access.SIGNED_IN, "the dashboard: one run", group="page"),
    Route("compare_page", "/compare", ("GET",), Kind.PAGE, Access.SIGNED_IN,
          "the dashboard: runs side by side (?runs=a,b)", group="page"),
    Route("asset", "/assets/{filename:path}", ("GET",), Kind.PAGE, Access.SIGNED_IN, "the page's scripts and styles",
          group="page"),
)

#: Stands for "no route" in the guard: an unknown path is checked like any route (Host, credentials) before its 404.
NO_ROUTE = Route("no_route", "", (), Kind.JSON, Access.SIGNED_IN, "an unknown path under the API's prefixes")

#: Path prefixes the API owns: any other path or method under them gets a JSON 404/405.
API_PREFIXES = ("/api/runs", "/api/training")


class MethodNotAllowed(Exception):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


class RouteMap:
    """Match ``(method, path)`` against the table, with the page group mounted at ``page_prefix``."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES, *, page_prefix: str = "/", with_health: bool = True) -> None:
        self.page_prefix = "/" + page_prefix.strip("/")
        self.routes = tuple(route for route in routes if with_health or route.group != "health")
        self._compiled = [
            (route, route.pattern(self.page_prefix if route.group == "page" else "")) for route in self.routes
        ]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and its path parameters; None if no route has this path.

        Raises MethodNotAllowed when one has the path but not the method (HEAD counts as GET).
        """
        allowed: list[str] = []
        wanted = "GET" if method == "HEAD" else method
        for route, pattern in self._compiled:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if wanted in route.methods:
                return route, found.groupdict()
            allowed += [m for m in route.methods if m not in allowed]
        if allowed:
            raise MethodNotAllowed(tuple(sorted(allowed)))
        return None

    def owns(self, path: str) -> bool:
        """Whether an unmatched path is still the API's (a JSON 404), not the host app's."""
        return any(path == prefix or path.startswith(prefix + "/") for prefix in API_PREFIXES)

    def serves(self, path: str) -> bool:
        """Whether ``path`` is this API's to answer (its routes, prefixes and page), not the host app's."""
        prefix = self.page_prefix.rstrip("/")
        if not prefix or self.owns(path):
            return True  # mounted at / (trackbridge serve): every path is ours
        if path == prefix or path.startswith(prefix + "/"):
            return True
        return any(route.group == "health" for route in self.routes) and path == "/health"


def _compile(path: str) -> re.Pattern[str]:
    pattern = ""
    for piece in re.split(r"(\{\w+(?::path)?\})", path):
        if piece.startswith("{"):
            name, _, kind = piece[1:-1].partition(":")
            pattern += f"(?P<{name}>.+)" if kind == "path" else f"(?P<{name}>[^/]+)"
        else:
            pattern += re.escape(piece)
    if path.endswith("/api/runs"):
        pattern += "/?"  # /api/runs/ too
    return re.compile(pattern)
