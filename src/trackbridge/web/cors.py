"""Cross-origin policy: no CORS unless configured, and no cross-site state changes.

Without configured origins a browser page from another site can read
nothing (no ``Access-Control-Allow-Origin``). It could still *send* a simple
``POST`` or open a WebSocket (browsers do not preflight those), which would
let any web page stop a local training: such requests are refused when
their ``Origin`` is neither this server's nor an allowed one. Clients that
send no ``Origin`` (curl, scripts) are not browsers and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Request, Response

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"


class CrossOriginPolicy:
    """The origins (``scheme://host[:port]``, or ``*``) allowed to use the API from a browser."""

    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin.rstrip("/") in self.origins)

    def refuses(self, request: Request) -> str | None:
        """Why a state-changing request (POST, WebSocket) is refused, or None."""
        origin = request.headers.get("Origin")
        if origin is None or self.allows(origin) or _same_origin(origin, request):
            return None
        return (
            f"cross-origin request from {origin} refused; allow it with "
            "TRACKBRIDGE_CORS_ORIGINS (or create_app(cors_origins=...))"
        )

    def apply(self, request: Request, response: Response) -> Response:
        """Add CORS headers to ``response`` for an allowed ``Origin``."""
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            return response
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in self.origins else origin
        response.vary.add("Origin")
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response


def _same_origin(origin: str, request: Request) -> bool:
    try:
        return urlsplit(origin).netloc.lower() == request.host.lower()
    except ValueError:
        return False
