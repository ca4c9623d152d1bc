"""A stream stays open for the stages that follow fit in the same process, and ends when the process lets go."""

from __future__ import annotations

import threading
import time

import httpx

from conftest import wait_until
from web_clients import ServeProcess, read_sse, start_training


def test_a_stream_delivers_a_test_stage_after_training_complete_then_ends(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    server = ServeProcess(root)
    training = start_training(root, "staged", epochs=2, sleep=0.02, test_after=1.5, log=tmp_path / "train.log")
    try:
        wait_until(lambda: (root / "staged" / "events.jsonl").exists(), timeout=60, what="the run's first event")
        results = []
        reader = threading.Thread(target=lambda: results.append(
            read_sse(httpx.Client(), f"{server.url}/api/training/staged/stream", timeout=120)))
        reader.start()
        assert training.wait(timeout=120) == 0, (tmp_path / "train.log").read_text()[-3000:]
        exited_at = time.monotonic()
        reader.join(timeout=60)
        assert not reader.is_alive()
        result = results[0]
        assert result.error is None and result.closed_by_server
        types = [e["type"] for e in result.events]
        assert types.index("training_complete") < types.index("stage_end")  # the stage came after fit ended
        assert result.events[-1]["type"] == "stage_end" and "test_mae" in result.events[-1]["metrics"]
        assert result.ids == list(range(1, len(result.ids) + 1))
        # the stream ended once the process let the run go (at exit), not a heartbeat later
        assert time.monotonic() - exited_at < 10
    finally:
        training.kill()
        server.stop()
