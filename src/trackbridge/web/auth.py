"""Who a request is from: the API token (``TRACKBRIDGE_TOKEN``), or, under ``trackbridge-auth``, an MLflow user.

The token travels as ``Authorization: Bearer <token>`` (scripts), as
``?token=`` (the one request a user opens the page with), or as the
``trackbridge_token`` cookie the page sets from that ``?token=``: HttpOnly
and SameSite=Strict, so that a browser's ``EventSource`` (which cannot set
headers) streams without the token in any URL or log line. Comparisons take
the same time whatever the guess.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import quote, unquote
from typing import Any, Mapping, Protocol

from .http import ApiError, ApiRequest
from .routes import Access

BEARER = "Bearer "
COOKIE = "trackbridge_token"
UNAUTHORIZED = "missing or wrong token: send 'Authorization: Bearer <TRACKBRIDGE_TOKEN>' or open the page as ?token="
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="trackbridge"'}


@dataclass(frozen=True)
class Principal:
    """The caller. ``explicit``: its credentials came in a way no foreign page can forge (header or query)."""

    name: str | None = None
    admin: bool = True
    explicit: bool = False
    via: str = "none"


ANONYMOUS = Principal()


class Authorizer(Protocol):
    """Authenticates requests and decides what a principal may do with a run.

    ``per_run``: whether :meth:`can` depends on the run (then the API reads
    the run before answering any of its routes).
    """

    per_run: bool

    def authenticate(self, request: ApiRequest) -> Principal:
        """The caller, or ApiError(401)."""
        ...

    def can(self, principal: Principal, access: Access, run: Mapping[str, Any] | None) -> bool:
        """Whether ``principal`` may ``access`` the run described by ``run`` (run.json, or what MLflow knows)."""
        ...


class TokenAuthorizer:
    """All or nothing: with no token configured everyone is let in; with one, whoever presents it."""

    #: No run-level decisions: every run is open to whoever is let in.
    per_run = False

    def __init__(self, token: str | None) -> None:
        self.token = token

    def authenticate(self, request: ApiRequest) -> Principal:
        if self.token is None:
            return ANONYMOUS
        given, via = presented_token(request)
        if given is None or not hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8")):
            raise ApiError(401, UNAUTHORIZED, CHALLENGE)
        return Principal(admin=True, explicit=via in ("header", "query"), via=via)

    def can(self, principal: Principal, access: Access, run: Mapping[str, Any] | None) -> bool:
        return True


def presented_token(request: ApiRequest) -> tuple[str | None, str]:
    """The token the client sent and how: the Bearer header wins over ``?token=``, which wins over the cookie."""
    header = request.headers.get("authorization") or ""
    if header.startswith(BEARER):
        return header[len(BEARER):].strip(), "header"
    if request.query.get("token") is not None:
        return request.query["token"], "query"
    cookie = cookie_value(request.headers.get("cookie"), COOKIE)
    if cookie is not None:
        return unquote(cookie), "cookie"
    return None, "none"


def cookie_value(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # http.cookies raises CookieError (and worse) on malformed headers
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def token_cookie(token: str, *, secure: bool) -> str:
    """The Set-Cookie value that carries the token for the page's own requests (``Path=/``: the API too)."""
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Strict{flags}"
