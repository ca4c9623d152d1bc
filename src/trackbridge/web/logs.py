"""Keep the API token out of log lines: every access log the project configures is redacted.

A page opened as ``/?token=...`` (and any client that puts the token in its
query string) would otherwise leave the token in uvicorn's, gunicorn's or
Werkzeug's access log. :class:`TokenRedactingFilter` rewrites
``token=<value>`` to ``token=[redacted]`` in a record's message and
arguments; :func:`install_token_redaction` puts it on those loggers.
"""

from __future__ import annotations

import logging
import re
from typing import Any

ACCESS_LOGGERS = ("uvicorn.access", "uvicorn.error", "gunicorn.access", "gunicorn.error", "werkzeug")
_TOKEN = re.compile(r"(?i)(\btoken=)[^&\s\"'#]*")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    return _TOKEN.sub(REDACTED, text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites ``token=...`` in a log record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):  # gunicorn's atoms: changed in place, it is a dict subclass
            for key, value in list(record.args.items()):
                record.args[key] = _redact_value(value)
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_value(value) for value in record.args)
        return True


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) and "token=" in value.lower() else value


def install_token_redaction(names: tuple[str, ...] = ACCESS_LOGGERS) -> None:
    """Add the filter to each named logger (once)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in logger.filters):
            logger.addFilter(TokenRedactingFilter())
