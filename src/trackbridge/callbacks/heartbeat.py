"""A daemon thread that refreshes ``heartbeat_at`` in run.json while a run is alive."""

from __future__ import annotations

import logging
import threading

from ..record.clock import utc_now_iso
from ..record.run_dir import RunDirectory

log = logging.getLogger(__name__)


class Heartbeat:
    """Beats every ``interval_s`` seconds until :meth:`stop`; a failed beat is logged, not raised."""

    def __init__(self, run_dir: RunDirectory, interval_s: float) -> None:
        self.run_dir = run_dir
        self.interval_s = interval_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="trackbridge-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.run_dir.update_run(heartbeat_at=utc_now_iso())
            except OSError as exc:  # a full or vanished disk must not kill training
                log.warning("trackbridge: could not refresh the heartbeat of %s: %s", self.run_dir, exc)
