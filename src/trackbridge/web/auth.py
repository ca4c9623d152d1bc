"""The optional API token (``TRACKBRIDGE_TOKEN``): ``Authorization: Bearer <token>`` or ``?token=``.

``?token=`` exists for clients that cannot set headers (a browser's
EventSource). The comparison takes the same time whatever the guess.
"""

from __future__ import annotations

import hmac

from flask import Request

BEARER = "Bearer "


def presented_token(request: Request) -> str | None:
    """The token the client sent: the Bearer header wins over ``?token=``."""
    header = request.headers.get("Authorization", "")
    if header.startswith(BEARER):
        return header[len(BEARER):].strip()
    return request.args.get("token")


def token_ok(request: Request, token: str | None) -> bool:
    """True when no token is configured, or the client presented exactly ``token``."""
    if token is None:
        return True
    given = presented_token(request)
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))
