"""prompt_gil: the writer's bursts lower the switch interval and always put the process's own back."""

from __future__ import annotations

import sys
import threading

from trackbridge.callbacks.gil import BURST_SWITCH_INTERVAL_S, prompt_gil


def test_a_burst_lowers_the_interval_and_restores_the_processs_own() -> None:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.004)
    try:
        with prompt_gil():
            assert sys.getswitchinterval() == BURST_SWITCH_INTERVAL_S
        assert sys.getswitchinterval() == 0.004
    finally:
        sys.setswitchinterval(before)


def test_overlapping_bursts_of_two_threads_restore_only_when_the_last_ends() -> None:
    before = sys.getswitchinterval()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with prompt_gil():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    with prompt_gil():
        thread.start()
        assert inside.wait(5)
    assert sys.getswitchinterval() == BURST_SWITCH_INTERVAL_S  # the other thread's burst still runs
    release.set()
    thread.join(5)
    assert sys.getswitchinterval() == before


def test_an_error_in_the_burst_still_restores() -> None:
    before = sys.getswitchinterval()
    try:
        with prompt_gil():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert sys.getswitchinterval() == before
