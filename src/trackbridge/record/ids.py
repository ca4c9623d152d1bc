"""Run ids: URL-safe, and sortable by creation time when generated."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class InvalidRunIdError(ValueError):
    """Raised for a run id that could not be used safely in a path or a URL."""


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is a valid run id, else raise InvalidRunIdError.

    Valid: 1-128 characters of ``A-Z a-z 0-9 . _ -``, starting with a letter
    or digit, so an id can never be ``..``, absolute, or hold a separator.
    """
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        shown = run_id if not isinstance(run_id, str) or len(run_id) <= 40 else run_id[:40] + "..."
        raise InvalidRunIdError(
            f"invalid run id {shown!r}: use 1-128 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (e.g. 'exp-42')"
        )
    return run_id


def new_run_id(now: datetime | None = None) -> str:
    """A fresh id like ``20261129-174605-123-k3x9q2``: time first, so ids sort by creation."""
    now = now or datetime.now(timezone.utc)
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}-{suffix}"
