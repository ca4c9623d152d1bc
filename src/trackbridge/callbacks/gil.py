"""``prompt_gil()``: a background thread's burst of small I/O, not stretched by a busy training thread.

Every system call a Python thread makes releases the GIL, and getting it back
takes up to ``sys.getswitchinterval()`` (5 ms by default) while another
thread runs Python code: CPython asks the running thread to drop the GIL
only after the waiter has waited that long. A record writer's wave makes
some 40 calls (open, write, fsync, rename, flock ...), so next to a training
thread busy in Lightning's Python it took 120-150 ms instead of 2 ms,
which is longer than the kill guarantee allows (README, "What survives a
crash"). While a burst runs, the interval is lowered to
:data:`BURST_SWITCH_INTERVAL_S`; the last burst to end restores the
interval the process had.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

#: The switch interval while a burst runs: each GIL hand-back costs at most this.
BURST_SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_bursts = 0
_saved: float | None = None


@contextmanager
def prompt_gil() -> Iterator[None]:
    """Lower the process's switch interval for the duration of the block (re-entrant across threads)."""
    global _bursts, _saved
    with _lock:
        if _bursts == 0:
            _saved = sys.getswitchinterval()
            if _saved > BURST_SWITCH_INTERVAL_S:
                sys.setswitchinterval(BURST_SWITCH_INTERVAL_S)
        _bursts += 1
    try:
        yield
    finally:
        with _lock:
            _bursts -= 1
            if _bursts == 0 and _saved is not None:
                if _saved > BURST_SWITCH_INTERVAL_S:
                    sys.setswitchinterval(_saved)
                _saved = None
