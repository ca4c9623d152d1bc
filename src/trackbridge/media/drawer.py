"""Drawer: where the media thread has its jobs drawn — the run's render process, else itself.

The render process starts with the first job that needs drawing (or at :meth:`prepare`),
on the media thread, never on the training thread. If it cannot start, or dies, the
drawer says so once and draws every later job on the media thread (matplotlib then holds
the GIL there, as before the process existed): the media are slower to make, never lost
for that reason. A job that cannot be pickled is drawn on the media thread too.
"""

from __future__ import annotations

import logging
from typing import Any

from ..console import announce
from .jobs import MediaJob, Rendered
from .render_process import NotPicklable, RenderProcess, RenderProcessLost, RenderProcessUnavailable

log = logging.getLogger("trackbridge")


class Drawer:
    """Draws :class:`MediaJob` objects; ``in_process=False`` draws them all on the calling thread.

    :attr:`fell_back` is True once the render process failed and jobs are drawn here.
    The process is left behind when the drawer is pickled (``ddp_spawn``).
    """

    def __init__(self, *, in_process: bool = True) -> None:
        self.in_process = in_process
        self.fell_back = False
        self.process: RenderProcess | None = None
        self._killed = False  # by kill(): the loss that follows is ours, not the process's failure

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "process": None, "_killed": False}

    @property
    def uses_process(self) -> bool:
        return self.in_process and not self.fell_back

    @property
    def process_cpu_s(self) -> float:
        """CPU time the render process spent on jobs so far."""
        return self.process.cpu_s if self.process is not None else 0.0

    def prepare(self) -> None:
        """Start the render process now (its imports take seconds), so the first job draws at once."""
        if self.uses_process:
            try:
                self._process().start()
            except RenderProcessUnavailable as exc:
                self._fall_back(exc)

    def draw(self, job: MediaJob) -> list[Rendered]:
        """What ``job`` draws; raises what its drawing raised (the caller counts it)."""
        if isinstance(job.render, Rendered):
            return [job.render]  # encoded by the caller already (log_figure)
        if self.uses_process:
            try:
                return self._process().render(job.render)
            except NotPicklable as exc:
                log.debug("trackbridge: media %r drawn on the media thread: %s", job.key, exc)
            except RenderProcessUnavailable as exc:
                self._fall_back(exc)  # the job never reached it: drawn here instead
            except RenderProcessLost as exc:
                self._fall_back(exc)
                raise
        result = job.render()
        return [result] if isinstance(result, Rendered) else list(result)

    def close(self, timeout: float) -> None:
        """Let the render process go (a later job starts a new one)."""
        if self.process is not None:
            self.process.close(timeout)

    def kill(self) -> None:
        """End the render process now: a job it holds is abandoned (its waiter learns it is lost)."""
        if self.process is not None:
            self._killed = True
            self.process.kill()

    def _process(self) -> RenderProcess:
        if self.process is None:
            self.process = RenderProcess()
        return self.process

    def _fall_back(self, exc: Exception) -> None:
        if self.process is not None:
            self.process.kill()
        if self._killed:  # ended on purpose (a close that could not wait): a new process next time
            self._killed = False
            log.debug("trackbridge: the media render process was ended while drawing: %s", exc)
            return
        if not self.fell_back:
            self.fell_back = True
            announce(
                f"the media render process failed: {exc}; drawing this run's media on its media thread "
                "instead (slower for the training: matplotlib holds the GIL while it draws)", log,
            )
