"""When MLflow does not answer, or answers 5xx/429: back off, honour ``Retry-After``, say so once per cause.

:class:`Backoff` is the retry clock the live worker and ``trackbridge sync``
share: exponential from 1 s to a cap, never sooner than a ``Retry-After``
asked for. :class:`OutageLog` is the worker's account of outages for the
console: one message when a cause first appears in a run (naming the HTTP
status and MLflow's error code, or the host it could not reach), one when
MLflow is back.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..console import announce
from .errors import FailureKind, MirrorFailure

log = logging.getLogger("trackbridge.mirror")


class Backoff:
    """Delays between tries: 1, 2, 4, ... s up to ``max_s``, or what the server asked for if longer."""

    def __init__(self, first_s: float = 1.0, max_s: float = 30.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def delay(self, failure: MirrorFailure) -> float:
        """The wait before the next try after ``failure`` (and the one after grows)."""
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        if failure.retry_after_s is not None:
            delay = max(delay, failure.retry_after_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


class OutageLog:
    """The worker's outages: counted, announced once per cause, their end announced."""

    def __init__(self, tracking_uri: str, run_id: str, announce: Callable[[str], None]) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.announce = announce
        self.count = 0
        self.down_since: float | None = None
        self._said: set[str] = set()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, failure: MirrorFailure, retry_in: float) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.count += 1
        if failure.cause in self._said:
            log.debug("MLflow still failing (%s); next try in %.1f s", failure, retry_in)
            return
        self._said.add(failure.cause)
        if failure.kind is FailureKind.UNREACHABLE:
            what = f"is unreachable ({failure})"
        elif failure.kind is FailureKind.REFUSED:
            what = f"refused to open the run ({failure})"
        else:
            what = f"answered {failure}"
        asked = " as it asked (Retry-After)" if failure.retry_after_s is not None else ""
        self.announce(
            f"MLflow at {self.tracking_uri} {what}; training goes on, run {self.run_id} is kept locally "
            f"and retried in the background, next try in {retry_in:.0f} s{asked} "
            f"(`trackbridge sync {self.run_id}` replays anything left)"
        )

    def recovered(self) -> None:
        if self.down_since is None:
            return
        down = time.monotonic() - self.down_since
        self.down_since = None
        self.announce(f"MLflow at {self.tracking_uri} is reachable again after {down:.0f} s; "
                      f"run {self.run_id} caught up")


def announce_to_console(message: str) -> None:
    """Log ``message`` on the mirror's logger (training.log gets it); the console shows it too."""
    announce(message, log)
