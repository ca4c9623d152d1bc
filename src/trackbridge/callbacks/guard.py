"""The one place where a tracking error inside a callback hook stops: it never reaches the training.

Every hook of trackbridge's own callbacks is decorated with :func:`tracking_hook`.
An exception raised by the tracking code there (a bug, a full disk, an
unreadable file) is logged once per kind — with its traceback, to the console
and training.log — counted in :class:`TrackingErrors` (``run.json``
``tracking_errors`` at the end of the run), and the training goes on. The
training's own errors (its steps, its data, Lightning's checkpoint saves)
never pass through here, so they still end the run as before; neither do
``KeyboardInterrupt`` and ``SystemExit``.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, TypeVar

from ..console import announce

log = logging.getLogger("trackbridge")

F = TypeVar("F", bound=Callable[..., Any])


class TrackingErrors:
    """Counts tracking errors of one run and reports each kind once."""

    def __init__(self) -> None:
        self.count = 0
        self._seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def record(self, where: str, what: str, exc: BaseException) -> None:
        kind = (where, what, type(exc).__name__)
        with self._lock:
            self.count += 1
            first = kind not in self._seen
            self._seen.add(kind)
        if first:
            log.debug("tracking error in %s.%s", where, what, exc_info=exc)  # the traceback, for training.log
            announce(
                f"tracking error in {where}.{what} ({type(exc).__name__}: {exc}); "
                "the training goes on, this part of the record may be incomplete",
                log, level=logging.ERROR,
            )

    def writer_error(self, what: str, exc: BaseException) -> None:
        """An error of the record writer thread (a bug there, or in a listener it calls)."""
        self.record("RecordWriter", what, exc)

    def __getstate__(self) -> dict[str, Any]:
        return {"count": self.count}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.count = state.get("count", 0)


def tracking_hook(method: F) -> F:
    """Decorate a callback hook: tracking errors are caught here, reported once and counted.

    The callback must have a ``session`` attribute (a
    :class:`~trackbridge.callbacks.session.RunSession`) whose ``errors`` count.
    """

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            errors = getattr(getattr(self, "session", None), "errors", None) or _FALLBACK
            errors.record(type(self).__name__, method.__name__, exc)
            return None

    return guarded  # type: ignore[return-value]


_FALLBACK = TrackingErrors()
