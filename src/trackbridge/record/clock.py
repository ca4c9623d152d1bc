"""UTC timestamps in one format (ISO-8601, ``Z``) for every file and event."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """``2026-11-29T17:46:05.123456Z``."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def utc_now_iso() -> str:
    return iso(utc_now())


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso` (also accepts ``+00:00``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso_from_timestamp(seconds: float) -> str:
    """:func:`iso` of a ``time.time()`` value (taken cheaply on a hot path, formatted later)."""
    return iso(datetime.fromtimestamp(seconds, tz=timezone.utc))
