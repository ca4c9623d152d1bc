"""The optional API token (``TRACKBRIDGE_TOKEN``): ``Authorization: Bearer <token>`` or ``?token=``.

``?token=`` exists for clients that cannot set headers (a browser's
EventSource or WebSocket). The comparison takes the same time whatever the guess.
"""

from __future__ import annotations

import hmac
from typing import Mapping

BEARER = "Bearer "
UNAUTHORIZED = "missing or wrong token: send 'Authorization: Bearer <TRACKBRIDGE_TOKEN>' or ?token="
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="trackbridge"'}


def presented_token(headers: Mapping[str, str], args: Mapping[str, str]) -> str | None:
    """The token the client sent: the Bearer header wins over ``?token=``."""
    header = headers.get("Authorization") or ""
    if header.startswith(BEARER):
        return header[len(BEARER):].strip()
    return args.get("token")


def token_ok(headers: Mapping[str, str], args: Mapping[str, str], token: str | None) -> bool:
    """True when no token is configured, or the client presented exactly ``token``."""
    if token is None:
        return True
    given = presented_token(headers, args)
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))
