"""Allowed ``Host`` headers: what stops a DNS-rebinding page from reaching the API.

A page on ``evil.example`` whose name is rebound to 127.0.0.1 talks to this
server with ``Host: evil.example``; only Host names the operator allowed are
served. Allowed by default, with any port: ``localhost``, ``127.0.0.1``,
``[::1]`` and the address the connection came in on (the bind address, or
the interface's address under a wildcard bind: a literal IP is what a client
that is not rebinding uses). More with ``--allowed-hosts`` /
``TRACKBRIDGE_ALLOWED_HOSTS``, written as MLflow's own ``--allowed-hosts``:
comma-separated names or ``fnmatch`` patterns (``*.example.com``,
``host:5000`` for one port), ``*`` for any.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class HostPolicy:
    """Decides whether a request's Host header names this server."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        patterns = [p.strip().lower() for p in extra if p and p.strip()]
        self.any = "*" in patterns
        self.patterns = tuple(dict.fromkeys([*DEFAULT_HOSTS, *patterns]))

    def allows(self, host_header: str | None, local_address: str | None = None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False  # HTTP/1.1 requires Host; a request without one names nothing we serve
        full = host_header.strip().lower()
        name = host_name(full)
        if local_address and name == _bracketed(local_address.lower()):
            return True
        return any(_matches(pattern, full, name) for pattern in self.patterns)


def host_name(host: str) -> str:
    """The name part of a Host header: ``example.com:80`` → ``example.com``, ``[::1]:80`` → ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") > 1:  # a bare IPv6 address (not valid in Host, but seen)
        return f"[{host}]"
    return host.split(":", 1)[0].rstrip(".")


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _matches(pattern: str, full: str, name: str) -> bool:
    if "*" not in pattern and "?" not in pattern:
        return pattern == name or pattern == full
    escaped = pattern.replace("[", "[[]")  # a bracketed IPv6 pattern is literal, not an fnmatch class
    return fnmatch.fnmatchcase(name, escaped) or fnmatch.fnmatchcase(full, escaped)
