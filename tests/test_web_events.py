"""The event layer under the live API: the tailing file source, the hub, one reader's stream."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from trackbridge.events import EventEmitter, EventHub, EventLog, EventStream, FileEventSource
from trackbridge.record import RunDirectory


def _run(root: Path, run_id: str = "r1") -> tuple[RunDirectory, EventEmitter]:
    run_dir = RunDirectory(root, run_id)
    run_dir.create({"task": "regression"})
    return run_dir, EventEmitter(EventLog(run_dir.events_jsonl), run_id)


def _ids(events) -> list[int]:
    return [e["id"] for e in events if e is not None]


def test_file_source_reads_only_new_complete_lines(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    source = FileEventSource(run_dir)
    assert source.read() == []
    emitter.emit("run_started", max_epochs=2)
    emitter.emit("epoch_end", epoch=1, max_epochs=2, metrics={"val_loss": 1.0})
    assert _ids(source.read()) == [1, 2]
    assert source.read(2) == []
    with open(run_dir.events_jsonl, "a") as fh:  # a writer caught mid-line
        fh.write('{"id": 3, "type": "epoch_end"')
    assert source.read(2) == []
    with open(run_dir.events_jsonl, "a") as fh:
        fh.write(', "run_id": "r1"}\n')
    assert _ids(source.read(2)) == [3]
    assert _ids(source.read(1)) == [2, 3]  # asking for older events reads from the top again


def test_stream_replays_a_finished_run_and_ends(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    for event_type in ("run_started", "epoch_end", "training_complete"):
        emitter.emit(event_type)
    hub = EventHub()
    with EventStream(hub, "r1", lambda: FileEventSource(run_dir), 0, tick_s=0.1) as stream:
        assert _ids(stream) == [1, 2, 3]
    with EventStream(hub, "r1", lambda: FileEventSource(run_dir), 1, tick_s=0.1) as stream:
        assert _ids(stream) == [2, 3]


def test_stream_goes_on_after_a_terminal_event_when_the_run_was_resumed(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    for event_type in ("run_started", "training_stopped", "run_started", "epoch_end"):
        emitter.emit(event_type)
    hub = EventHub()
    stream = EventStream(hub, "r1", lambda: FileEventSource(run_dir, poll_interval_s=0.01), 0, tick_s=0.05)
    got = [next(stream) for _ in range(4)]
    assert _ids(got) == [1, 2, 3, 4]
    emitter.emit("training_complete")
    rest = list(stream)
    assert _ids(rest) == [5] and rest[-1]["type"] == "training_complete"


def test_hub_slow_reader_blocks_nobody_and_catches_up_from_the_log(runs_root: Path) -> None:
    """A reader that stops reading overflows only its own buffer, then reads the gap from the file."""
    run_dir, emitter = _run(runs_root)
    from trackbridge.events import EventBroker

    hub = EventHub(EventBroker(maxsize=8))
    make = lambda: FileEventSource(run_dir, poll_interval_s=0.005)  # noqa: E731
    slow = EventStream(hub, "r1", make, tick_s=0.05)
    fast = EventStream(hub, "r1", make, tick_s=0.05)
    fast_ids: list[int] = []

    def read_fast() -> None:
        for event in fast:
            if event is not None:
                fast_ids.append(event["id"])

    reader = threading.Thread(target=read_fast)
    reader.start()
    started = time.monotonic()
    emitter.emit("run_started")
    for epoch in range(1, 101):  # 100 events while `slow` reads nothing: 12 times its buffer
        emitter.emit("epoch_end", epoch=epoch)
        time.sleep(0.001)
    emitter.emit("training_complete")
    produced_in = time.monotonic() - started
    reader.join(timeout=10)
    assert fast_ids == list(range(1, 103))
    assert produced_in < 5  # the producer never waited on the stalled reader
    assert hub.broker.has_subscribers("r1")  # the stalled reader is still subscribed...
    assert _ids(slow) == list(range(1, 103))  # ...and gets everything once it reads again
    slow.close()
    fast.close()
    deadline = time.monotonic() + 2
    while hub.watched_runs() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.watched_runs() == []  # the watcher stops once nobody reads the run


def test_stream_yields_ticks_while_a_run_is_idle(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    emitter.emit("run_started")
    with EventStream(EventHub(), "r1", lambda: FileEventSource(run_dir), tick_s=0.05) as stream:
        assert next(stream)["id"] == 1
        assert next(stream) is None  # a heartbeat tick


@pytest.mark.parametrize("after_id", [0, 2])
def test_stream_from_inprocess_broker_drops_duplicates(runs_root: Path, after_id: int) -> None:
    """In the training process the log publishes to the same broker the watcher feeds: no event twice."""
    from trackbridge.events import EventBroker

    broker = EventBroker()
    run_dir = RunDirectory(runs_root, "r1")
    run_dir.create({"task": "regression"})
    emitter = EventEmitter(EventLog(run_dir.events_jsonl, broker=broker), "r1")
    emitter.emit("run_started")
    emitter.emit("epoch_end", epoch=1)
    hub = EventHub(broker)
    stream = EventStream(hub, "r1", lambda: FileEventSource(run_dir, poll_interval_s=0.01), after_id, tick_s=0.05)
    emitter.emit("epoch_end", epoch=2)
    emitter.emit("training_complete")
    assert _ids(stream) == list(range(after_id + 1, 5))


def test_stream_of_a_finished_run_ends_at_once_for_a_client_that_has_it_all(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    for event_type in ("run_started", "epoch_end", "training_complete"):
        emitter.emit(event_type)
    started = time.monotonic()
    for after_id in (3, 7):
        with EventStream(EventHub(), "r1", lambda: FileEventSource(run_dir), after_id, tick_s=5) as stream:
            assert list(stream) == []
    assert time.monotonic() - started < 2


def _collect_async(hub: EventHub, make, after_id: int = 0, *, tick_s: float = 5) -> list:
    """Everything an asyncio reader (the ASGI transport's driver) gets until its stream ends."""
    import asyncio

    from trackbridge.events.fanout import END, AsyncFanout

    async def collect() -> list:
        reader = await AsyncFanout(hub, tick_s=tick_s).open("r1", make, after_id)
        got: list = []
        while (batch := await reader.next_batch()) is not END:
            got += batch if batch is not None else [None]
        return got

    return asyncio.run(collect())


def test_stream_async_replays_resumes_and_ends_like_the_blocking_one(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    for event_type in ("run_started", "training_stopped", "run_started", "epoch_end", "training_complete"):
        emitter.emit(event_type)
    make = lambda: FileEventSource(run_dir)  # noqa: E731
    assert _ids(_collect_async(EventHub(), make, 0)) == [1, 2, 3, 4, 5]
    assert _ids(_collect_async(EventHub(), make, 3)) == [4, 5]
    assert _collect_async(EventHub(), make, 5) == []


def test_stream_async_follows_live_events_and_catches_up_after_overflow(runs_root: Path) -> None:
    """Readers are woken by the watcher's publish; a burst larger than the loop's buffer is read from the log."""
    import asyncio

    from trackbridge.events import EventBroker
    from trackbridge.events.fanout import END, AsyncFanout

    run_dir, emitter = _run(runs_root)
    emitter.emit("run_started")
    hub = EventHub(EventBroker(maxsize=4))
    make = lambda: FileEventSource(run_dir, poll_interval_s=0.005)  # noqa: E731

    async def read_while_writing() -> tuple[list, list]:
        fanout = AsyncFanout(hub, tick_s=0.05)
        slow, fast = await fanout.open("r1", make), await fanout.open("r1", make)
        writer = asyncio.get_running_loop().run_in_executor(None, write_burst)

        async def drain(reader, pause: float) -> list:
            got: list = []
            while (batch := await reader.next_batch()) is not END:
                got += [e for e in batch or () if e is not None]
                if pause and len(got) == 1:
                    await asyncio.sleep(pause)  # a slow client: the burst piles up for it alone
            return got

        results = await asyncio.gather(drain(slow, 0.5), drain(fast, 0))
        await writer
        assert fanout.reader_count == 0
        return results

    def write_burst() -> None:
        time.sleep(0.05)
        for epoch in range(1, 31):
            emitter.emit("epoch_end", epoch=epoch)
        emitter.emit("training_complete")

    slow_got, fast_got = asyncio.run(read_while_writing())
    assert _ids(slow_got) == list(range(1, 33))
    assert _ids(fast_got) == list(range(1, 33))
    assert not hub.broker.has_subscribers("r1")  # ended: unsubscribed


def test_fanout_one_channel_serves_many_readers_and_a_stalled_one_holds_nobody(runs_root: Path) -> None:
    """200 asyncio readers of one run share one subscription; one that never reads does not delay the rest."""
    import asyncio

    from trackbridge.events.fanout import END, AsyncFanout

    run_dir, emitter = _run(runs_root)
    emitter.emit("run_started")
    hub = EventHub()
    make = lambda: FileEventSource(run_dir, poll_interval_s=0.005)  # noqa: E731

    async def main() -> tuple[list, float, int]:
        fanout = AsyncFanout(hub, tick_s=0.05, max_ready=8)
        readers = [await fanout.open("r1", make) for _ in range(200)]
        stalled = await fanout.open("r1", make)
        subscribers = len(hub.broker._subscribers["r1"])
        done_at: list = []

        async def drain(reader) -> list:
            got: list = []
            while (batch := await reader.next_batch()) is not END:
                got += [e["id"] for e in batch or ()]
            done_at.append(time.monotonic())
            return got

        writer = asyncio.get_running_loop().run_in_executor(None, lambda: [
            emitter.emit("epoch_end", epoch=k) for k in range(1, 41)] and emitter.emit("training_complete"))
        results = await asyncio.gather(*(drain(r) for r in readers))
        await writer
        assert not stalled.state.done and stalled.state.behind  # it held more than max_ready: it reads the log later
        late = await drain(stalled)
        assert late == list(range(1, 43))
        return results, max(done_at[:-1]), subscribers

    results, _, subscribers = asyncio.run(main())
    assert subscribers == 1
    assert all(ids == list(range(1, 43)) for ids in results)


def test_stream_state_is_a_pure_state_machine() -> None:
    from trackbridge.events.stream import Phase, StreamState

    def ev(i: int, kind: str = "epoch_end", **fields) -> dict:
        return {"id": i, "type": kind, **fields}

    state = StreamState(after_id=2)
    assert state.start([ev(3), ev(4)], None) == [ev(3), ev(4)] and state.last_id == 4
    assert state.from_live([ev(4), ev(5)]) == [ev(5)]  # the overlap with the history is dropped
    assert state.from_live([ev(7)]) == [] and state.behind and state.needs_read  # a skipped id: read the log
    assert state.from_live([ev(8)]) == []  # nothing live while behind
    assert state.from_log([ev(6), ev(7), ev(8)]) == [ev(6), ev(7), ev(8)] and not state.behind
    assert state.from_live([ev(9, "training_failed")]) == [ev(9, "training_failed")]
    assert state.phase is Phase.ENDING and state.needs_read
    # the owner restored its run: the log goes on after the terminal event, and so does the stream
    restored = ev(10, "status", status="running", recovered=True)
    assert state.from_log([restored, ev(11)]) == [restored, ev(11)] and state.phase is Phase.LIVE
    assert state.from_live([ev(12, "training_complete")]) and state.phase is Phase.ENDING
    # a test stage after fit: its stage_end follows the terminal event, and the run's end still stands
    assert state.from_live([ev(13, "stage_end")]) == [ev(13, "stage_end")] and state.phase is Phase.ENDING
    # while the run's process still holds the run, the stream waits (and looks again at the next tick)
    assert state.from_log([], attached=True) == [] and state.held and not state.needs_read and not state.done
    state.tick()
    assert state.needs_read and state.from_log([]) == [] and state.done
    finished = StreamState(after_id=5)
    assert finished.start([], ev(5, "training_complete")) == [] and finished.done  # it has it all


def test_stream_replay_with_a_terminal_event_in_the_middle_ends_at_the_last_one(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    for event_type in ("run_started", "training_failed", "run_started", "training_complete"):
        emitter.emit(event_type)
    started = time.monotonic()
    with EventStream(EventHub(), "r1", lambda: FileEventSource(run_dir), 0, tick_s=5) as stream:
        assert _ids(stream) == [1, 2, 3, 4]
    assert time.monotonic() - started < 2


def test_sse_frames_write_a_burst_at_once_and_heartbeats_between() -> None:
    from trackbridge.web.sse import HEARTBEAT, frame, frames

    first, second, third = ({"id": i, "type": "epoch_end", "run_id": "r1"} for i in (1, 2, 3))
    chunks = list(frames([first, second, EventStream.IDLE, None, third, EventStream.IDLE]))
    assert chunks == [frame([first, second]), HEARTBEAT, frame([third])]
    assert frame([first]) == b'id: 1\ndata: {"id": 1, "type": "epoch_end", "run_id": "r1"}\n\n'
    assert frame(None) == HEARTBEAT
    same_id_other_content = {"id": 1, "type": "epoch_end", "run_id": "r2"}
    assert b'"r2"' in frame([same_id_other_content])  # the cache is by object, not by id


def test_file_source_last_id_reads_the_tail_of_a_long_log(runs_root: Path) -> None:
    run_dir, emitter = _run(runs_root)
    assert FileEventSource(run_dir).last_id() == 0
    for epoch in range(3000):  # ~400 KB: more than the first tail read
        emitter.emit("progress", epoch=epoch, batch=1, padding="x" * 60)
    with open(run_dir.events_jsonl, "a") as fh:
        fh.write('{"id": 3001, "type": "epo')  # being written: not an event yet
    assert FileEventSource(run_dir).last_id() == 3000
