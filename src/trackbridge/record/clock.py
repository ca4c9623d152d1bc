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


_SECOND: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text (replaced whole: thread-safe)


def iso_from_timestamp(seconds: float) -> str:
    """:func:`iso` of a ``time.time()`` value (taken cheaply on a hot path, formatted later).

    The date and time of day are formatted once per second; a line of
    steps.jsonl then costs one small f-string for its timestamp.
    """
    global _SECOND
    whole = int(seconds)
    cached = _SECOND
    if cached[0] != whole:
        cached = _SECOND = (whole, datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{int((seconds - whole) * 1_000_000):06d}Z"
