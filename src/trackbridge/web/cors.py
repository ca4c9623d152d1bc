"""Cross-origin policy: no CORS unless configured, and no cross-site control of runs.

Without configured origins a page from another site can read nothing (no
``Access-Control-Allow-Origin``). It could still *send* a simple ``POST``
(a form, ``fetch`` with ``no-cors``) or open a WebSocket — browsers preflight
neither — which would let any page stop a local training. So a request that
changes a run (stop, register, a WebSocket that may send stop) is refused
unless it comes from this server's own origin or an allowed one, or carries
the token explicitly (a header or ``?token=``: a foreign page cannot know it;
the cookie does not count, browsers attach it by themselves). A foreign or
``null`` Origin is refused, and so is a request without Origin whose
``Sec-Fetch-Site`` says a browser sent it cross-site. A client that sends
neither header (curl, scripts) is not a browser and passes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .http import ApiRequest

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"
_SAFE_FETCH_SITES = ("same-origin", "none")  # "none": typed in the address bar, a bookmark


class CrossOriginPolicy:
    """The origins (``scheme://host[:port]``, or ``*``) allowed to use the API from a browser."""

    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and origin != "null" and ("*" in self.origins or origin.rstrip("/") in self.origins)  # type: ignore[union-attr]

    def refusal(self, request: ApiRequest, *, explicit_token: bool = False) -> str | None:
        """Why a request that changes a run is refused as cross-site, or None."""
        if explicit_token:
            return None
        origin = request.origin
        if origin is not None:
            if origin != "null" and (self.allows(origin) or same_origin(origin, request.host)):
                return None
            return (
                f"cross-site request from origin {origin[:80]} refused; a page may control runs only from this "
                "server's own origin (or one in TRACKBRIDGE_CORS_ORIGINS), or with the token"
            )
        fetch_site = (request.headers.get("sec-fetch-site") or "").lower()
        if fetch_site and fetch_site not in _SAFE_FETCH_SITES:
            return f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:20]})"
        return None

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


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) is the server the ``Host`` header names."""
    try:
        parts = urlsplit(origin)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        if default is None or not parts.hostname:
            return False
        origin_port = parts.port or default
    except ValueError:
        return False
    host = host.strip().lower()
    name, _, port = host.rpartition(":") if not host.endswith("]") and ":" in host else (host, "", "")
    try:
        host_port = int(port) if port else default
    except ValueError:
        return False
    origin_name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return origin_name.lower() == name.lower() and origin_port == host_port
