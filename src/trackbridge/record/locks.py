"""RunLock: one writer of a run's record at a time, across threads and processes.

The training process (its callbacks, heartbeat and MLflow worker) and the CLI
(which may close the record of a dead run) all take the run's lock before they
change run.json or append a record another process might also append. Inside
one process an ``RLock`` orders the threads; across processes an advisory
``flock`` on ``<run>/.lock`` does. Readers (the web API) never lock and never
write: every file they read is replaced atomically or appended whole lines.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunLock:
    """Re-entrant lock of one run directory (use :func:`lock_for`, one instance per folder)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                self._fd = self._lock_file()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            self._thread_lock.release()

    def _lock_file(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            # A read-only or full disk: nobody can write the record then, so there is nothing to order.
            if exc.errno in (errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT, errno.ENOENT):
                log.debug("no lock file %s (%s); going on with the thread lock only", self.path, exc)
                return None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            return None
        return fd


_LOCKS: dict[str, RunLock] = {}
_GUARD = threading.Lock()


def lock_for(folder: str | os.PathLike[str]) -> RunLock:
    """The lock of run directory ``folder``, shared by every object of this process that writes it."""
    key = os.path.abspath(folder)
    with _GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = RunLock(Path(key))
        return lock
