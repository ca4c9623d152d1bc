"""RenderProcess: the run's one helper process that draws and encodes its media (parent side).

Matplotlib holds the GIL while it draws: 0.1-0.3 s of CPU per epoch that a media *thread*
takes from the training thread. In a process of its own the drawing costs the training
only the pickling of a job (the epoch's CPU arrays) and the unpickling of its PNG bytes.

The process is a fresh interpreter (``sys.executable -c ...``: fork-exec, never a bare fork
of a process with threads, and never a re-import of the user's ``__main__`` as
multiprocessing's spawn does) in a process group of its own, so Ctrl-C at the terminal
reaches only the training, which then closes the pipe. It is used by one thread at a time
(the run's media thread): one job out, one answer back, in order.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from .frames import StreamClosed, dumps, loads, read_frame, write_frame
from .jobs import Rendered

# Importing torch and matplotlib at a low priority on a busy machine can take a while.
START_TIMEOUT_S = 120.0
# Below the training in the scheduler's eyes: on a busy machine the figures wait, not the steps.
NICENESS = 10
# What the new interpreter runs. Priority and Ctrl-C first: importing trackbridge.media imports
# torch, seconds of CPU that must not compete with the training as equals.
_BOOT = (
    "import json, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "try:\n"
    f"    os.nice({NICENESS})\n"
    "except OSError:\n"
    "    pass\n"
    "sys.path[:] = json.loads(sys.argv[2])\n"
    "from trackbridge.media.render_worker import run\n"
    "run(sys.argv[1:2])\n"
)
# One thread per library in the render process: its drawing is serial, and the cores are the training's.
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


class RenderProcessError(Exception):
    """The render process cannot draw (the job has to be drawn elsewhere, or counted lost)."""


class RenderProcessUnavailable(RenderProcessError):
    """It could not start, or was gone before the job reached it: the job was not drawn."""


class RenderProcessLost(RenderProcessError):
    """It exited while it drew the job: the job is lost (it may be the job that killed it)."""


class NotPicklable(RenderProcessError):
    """The job cannot travel to another process (it holds a closure, a lock, ...)."""


class RenderProcess:
    """``python -c <boot> ... trackbridge.media.render_worker``, started by :meth:`start`.

    :meth:`render` sends one drawing function and returns what it drew (raising what it
    raised); :attr:`cpu_s` adds up the CPU time the process spent on jobs.
    """

    def __init__(self, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.start_timeout_s = start_timeout_s
        self.cpu_s = 0.0
        self.jobs = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the process and wait until it has imported its libraries; RenderProcessUnavailable if not."""
        if self.alive:
            return
        self.close(0.0)
        self._stderr = tempfile.TemporaryFile(prefix="trackbridge-render-")  # read back if it fails to start
        env = {**os.environ, **_ONE_THREAD, "MPLBACKEND": "Agg"}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(os.getpid()), json.dumps(sys.path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                env=env, close_fds=True, process_group=0,
            )
        except (OSError, ValueError) as exc:  # no executable, no pids or memory left
            self._proc = None
            raise RenderProcessUnavailable(f"it could not be started ({type(exc).__name__}: {exc})") from exc
        try:
            self._await_ready()
        except RenderProcessError:
            reason = self._stderr_tail()
            self.kill()
            raise RenderProcessUnavailable(f"it did not start{': ' + reason if reason else ''}") from None

    def render(self, render: Callable[[], Any]) -> list[Rendered]:
        """Draw ``render()`` in the process (started if needed); what it returned, as a list."""
        try:
            payload = dumps(render)
        except Exception as exc:  # pickling reports TypeError, AttributeError, PicklingError, ...
            raise NotPicklable(f"{type(exc).__name__}: {exc}") from exc
        if self._proc is None:
            self.start()  # the first job, or the first after close()
        elif self._proc.poll() is not None:  # it died between two jobs (killed, out of memory)
            raise RenderProcessUnavailable(f"it exited ({self._exit_text()})")
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        try:
            write_frame(self._proc.stdin, payload)
        except OSError as exc:
            raise RenderProcessUnavailable(f"it exited ({self._exit_text()})") from exc
        try:
            answer, value, cpu_s = loads(read_frame(self._proc.stdout))
        except (StreamClosed, OSError) as exc:
            self._proc.wait(timeout=5)
            raise RenderProcessLost(f"it exited while drawing ({self._exit_text()})") from exc
        self.cpu_s += cpu_s
        self.jobs += 1
        if answer == "error":
            raise value
        return list(value)

    def close(self, timeout: float) -> None:
        """Let the process go (it exits when its stdin closes); killed if still there after ``timeout``."""
        proc = self._proc
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> None:
        """End the process now (a job in hand is abandoned; a thread waiting on it gets its answer: lost)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    # -- helpers -----------------------------------------------------------
    def _await_ready(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        fd = self._proc.stdout.fileno()
        while not select.select([fd], [], [], 0.5)[0]:
            if self._proc.poll() is not None:
                raise RenderProcessUnavailable(self._exit_text())
            if time.monotonic() > deadline:
                raise RenderProcessUnavailable(f"not ready after {self.start_timeout_s:.0f} s")
        try:
            first = loads(read_frame(self._proc.stdout))
        except (StreamClosed, OSError) as exc:
            raise RenderProcessUnavailable(self._exit_text()) from exc
        if not (isinstance(first, tuple) and first[:1] == ("ready",)):
            raise RenderProcessUnavailable(f"it said {first!r} instead of ready")

    def _exit_text(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return "still running" if code is None else f"exit code {code}"

    def _stderr_tail(self, limit: int = 600) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return " / ".join(lines[-3:])[-limit:]
