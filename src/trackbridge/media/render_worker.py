"""The render process of a run: draws and encodes the media jobs its run sends, one at a time.

Started by :class:`~trackbridge.media.render_process.RenderProcess` (never by hand). It reads
job frames from stdin — a pickled drawing function holding the epoch's CPU arrays — and
answers each with a frame on its own copy of stdout: ``("ok", [Rendered, ...], cpu_s)`` or
``("error", exception, cpu_s)``. Its first frame, once the drawing libraries are imported,
is ``("ready", pid, 0.0)``.

It ends when its run lets go of it (stdin closes) or when its parent is gone (a SIGKILL of
the training leaves no stray render process: stdin closes with the parent, and the parent
pid is watched as well). Ctrl-C at the terminal is the parent's to handle: this process
ignores SIGINT, finishes the job in hand, and exits when the parent closes the pipe. It
runs at a lower priority than the training (set by the bootstrap command, before torch is
imported), with one thread for torch.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import IO, Any

PARENT_CHECK_S = 0.5


def main(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (the bootstrap did so already; main may be called alone)
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never between two frames
    _watch_parent(parent_pid)
    _preload()
    from .frames import StreamClosed, dumps, read_frame, write_frame

    write_frame(frames_out, dumps(("ready", os.getpid(), 0.0)))
    frames_in: IO[bytes] = sys.stdin.buffer
    while True:
        try:
            payload = read_frame(frames_in)
        except StreamClosed:
            return  # the run let go of this process (or is gone)
        write_frame(frames_out, _answer(payload))


def _answer(payload: bytes) -> bytes:
    """The reply frame to one job: what it drew, or the exception it raised."""
    from .frames import dumps, loads
    from .jobs import Rendered

    start = time.process_time()
    try:
        result = loads(payload)()
        items = [result] if isinstance(result, Rendered) else list(result)
        return dumps(("ok", items, time.process_time() - start))
    except Exception as exc:  # the job's failure, reported to the run (which counts it)
        return dumps(("error", _portable(exc), time.process_time() - start))


def _portable(exc: Exception) -> Exception:
    """``exc`` as it can travel back (its traceback as a note), or a RuntimeError saying what it was."""
    import pickle

    text = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"(raised in the render process)\n{text}")
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}\n{text}")


def _preload() -> None:
    """Import the drawing libraries before saying ready, so the first job draws at full speed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import PIL.Image  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import torchmetrics.functional.classification  # noqa: F401

    from . import figures  # noqa: F401


def _watch_parent(parent_pid: int) -> None:
    """Exit as soon as the parent is gone, even in the middle of a job (reparented: ppid changes)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="trackbridge-render-parent", daemon=True).start()


def run(argv: list[str]) -> Any:
    """Entry point of the bootstrap command: ``argv`` = [parent pid]."""
    main(int(argv[0]))
