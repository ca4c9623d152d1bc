"""What went wrong when talking to MLflow: one exception type, classified once, with a message people can act on.

Every MLflow call of the mirror goes through a backend (:mod:`.backend`) that
turns MLflow's many error types (``MlflowException``, ``requests`` errors,
OS errors, SQLAlchemy errors of an in-process SQL store) into one
:class:`MirrorFailure`, whose :class:`FailureKind` decides what the worker
and sync do: a refusal is not retried, anything else is retried with backoff.

SQLAlchemy is never imported here: its errors are recognised by the module
their class comes from, so mirroring to an HTTP server does not pay for it.
"""

from __future__ import annotations

import re
import time
from enum import Enum
from typing import Any

# Answers that mean "try again later" although they are 4xx (request timeout, rate limited).
RETRYABLE_4XX = frozenset({408, 429})
_HOST = re.compile(r"Failed to resolve '([^']+)'|host='([^']+)'")


class FailureKind(Enum):
    """How the mirror reacts to a failed MLflow call."""

    REFUSED = "refused"  # MLflow answered and said no (4xx): retrying the same request cannot help
    RETRYABLE = "retryable"  # MLflow answered 5xx, 429 or 408: back off (as Retry-After asks) and retry
    UNREACHABLE = "unreachable"  # no answer: connection refused, unknown host, timeout


class MirrorFailure(Exception):
    """One failed MLflow call: its kind, HTTP status and MLflow error code where known, and MLflow's message."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s

    @property
    def refused(self) -> bool:
        return self.kind is FailureKind.REFUSED

    @property
    def cause(self) -> str:
        """A short name for the cause, the same for every failure of one kind (``HTTP 429``, ``unreachable``)."""
        return f"HTTP {self.status}" if self.status is not None else self.kind.value

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        head = f"HTTP {self.status}" + (f" {self.code}" if self.code else "")
        tail = f" (Retry-After: {self.retry_after_s:g} s)" if self.retry_after_s is not None else ""
        return f"{head}: {self.message}{tail}" if self.message else head + tail


def failure_for_status(
    status: int, body: Any, *, retry_after: str | None = None, fallback: str = ""
) -> MirrorFailure:
    """The failure of an HTTP answer ``status`` whose JSON body is ``body`` (MLflow's ``error_code``, ``message``)."""
    code = message = None
    if isinstance(body, dict):
        code = body.get("error_code") or None
        message = body.get("message") or None
    if message is None:
        message = _one_line(fallback) or f"{status} answer"
    refused = 400 <= status < 500 and status not in RETRYABLE_4XX
    return MirrorFailure(
        FailureKind.REFUSED if refused else FailureKind.RETRYABLE,
        message,
        status=status,
        code=code,
        retry_after_s=parse_retry_after(retry_after),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # an HTTP date: rare, and the module is not free to import

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_mlflow_error(exc: BaseException) -> bool:
    """Whether ``exc`` is something MLflow or its transport raises (not a bug in the mirror)."""
    if isinstance(exc, MirrorFailure):
        return True
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (MlflowException, OSError)):  # requests' errors are OSErrors too
        return True
    return _is_sqlalchemy_error(exc)


def classify(exc: BaseException, tracking_uri: str = "") -> MirrorFailure:
    """The :class:`MirrorFailure` for an error :func:`is_mlflow_error` accepts."""
    if isinstance(exc, MirrorFailure):
        return exc
    transport = _transport_error(exc)
    if transport is not None:
        return _unreachable(transport, tracking_uri)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):  # requests.HTTPError from an artifact repository
        return failure_for_status(
            status, _json_or_none(response), retry_after=response.headers.get("Retry-After"), fallback=str(exc)
        )
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        code = exc.error_code
        status = exc.get_http_status_code()
        return failure_for_status(status, {"error_code": code, "message": exc.message})
    if _is_sqlalchemy_error(exc):
        # a locked or unavailable database: worth another try later
        return MirrorFailure(FailureKind.RETRYABLE, f"database error: {_one_line(str(exc))}")
    if isinstance(exc, OSError):  # a local artifact store: full disk, permissions
        return MirrorFailure(FailureKind.RETRYABLE, f"{type(exc).__name__}: {_one_line(str(exc))}")
    return MirrorFailure(FailureKind.RETRYABLE, f"{type(exc).__name__}: {_one_line(str(exc))}")


def _transport_error(exc: BaseException) -> BaseException | None:
    """The requests connection/timeout error behind ``exc`` (MLflow wraps them), if any."""
    import requests

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, (requests.ConnectionError, requests.Timeout)):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    text = str(exc)
    if "Max retries exceeded" in text or "Failed to establish a new connection" in text:
        return exc
    return None


def _unreachable(exc: BaseException, tracking_uri: str) -> MirrorFailure:
    import requests

    text = str(exc)
    where = tracking_uri or "the server"
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        said = f"no answer from {where} in time (timed out)"
    elif "Failed to resolve" in text or "Name or service not known" in text or "nodename nor servname" in text:
        said = f"cannot resolve host {_host(text, tracking_uri)!r}"
    elif "Connection refused" in text:
        said = f"connection refused by {where}"
    elif "RemoteDisconnected" in text or "Connection aborted" in text or "Connection reset" in text:
        said = f"connection to {where} dropped"
    else:
        said = f"cannot reach {where}: {_one_line(text)}"
    return MirrorFailure(FailureKind.UNREACHABLE, said)


def _host(text: str, tracking_uri: str) -> str:
    match = _HOST.search(text)
    if match:
        return match.group(1) or match.group(2)
    from urllib.parse import urlsplit

    return urlsplit(tracking_uri).hostname or tracking_uri


def _is_sqlalchemy_error(exc: BaseException) -> bool:
    return any(cls.__module__.split(".")[0] == "sqlalchemy" for cls in type(exc).__mro__)


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["FailureKind", "MirrorFailure", "classify", "failure_for_status", "is_mlflow_error", "parse_retry_after"]
