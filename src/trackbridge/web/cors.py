"""Cross-origin policy: no CORS unless configured, and no cross-site state changes.

Without configured origins a browser page from another site can read
nothing (no ``Access-Control-Allow-Origin``). It could still *send* a simple
``POST`` or open a WebSocket (browsers preflight neither), which would let
any web page stop a local training: such requests are refused when their
``Origin`` is neither this server's nor an allowed one. Clients that send no
``Origin`` (curl, scripts) are not browsers and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"


class CrossOriginPolicy:
    """The origins (``scheme://host[:port]``, or ``*``) allowed to use the API from a browser."""

    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin.rstrip("/") in self.origins)  # type: ignore[union-attr]

    def refusal(self, origin: str | None, host: str) -> str | None:
        """Why a state-changing request (POST, WebSocket) from ``origin`` to ``host`` is refused, or None."""
        if origin is None or self.allows(origin) or _same_origin(origin, host):
            return None
        return (
            f"cross-origin request from {origin} refused; allow it with "
            "TRACKBRIDGE_CORS_ORIGINS (or create_app(cors_origins=...))"
        )

    def headers(self, origin: str | None, method: str) -> dict[str, str]:
        """CORS headers for a response to ``origin`` (none unless it is allowed)."""
        if not self.allows(origin):
            return {}
        headers = {"Access-Control-Allow-Origin": "*" if "*" in self.origins else str(origin), "Vary": "Origin"}
        if method == "OPTIONS":
            headers.update({
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            })
        return headers


def _same_origin(origin: str, host: str) -> bool:
    try:
        return urlsplit(origin).netloc.lower() == host.lower()
    except ValueError:
        return False
