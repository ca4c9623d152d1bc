"""Telling the person at the terminal: one function every part of trackbridge uses.

While a run is tracked, the root logger's only handler may be training.log's
file, so a warning would never reach the terminal on its own. :func:`announce`
logs the message and, when no console handler would show it, prints it to
stderr as well.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("trackbridge")


def announce(message: str, logger: logging.Logger | None = None, *, level: int = logging.WARNING) -> None:
    """Log ``message`` (training.log gets it) and make sure the console shows it too."""
    logger = logger or log
    logger.log(level, "%s", message)
    if not console_handled(logger):
        shown = message if message.startswith("trackbridge") else f"trackbridge: {message}"
        print(shown, file=sys.stderr, flush=True)


def console_handled(logger: logging.Logger) -> bool:
    """Whether a record logged on ``logger`` reaches a stream handler on stderr/stdout."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
                    return True
        current = current.parent if current.propagate else None
    return False
