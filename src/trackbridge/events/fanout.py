"""Fan-out on an asyncio loop: each batch of a run's events reaches all its readers in one pass.

The blocking driver (:class:`~trackbridge.events.stream.EventStream`) gives
every reader its own broker subscription, queue and thread. Here a loop
holds *one* subscription per watched run (a :class:`_Channel`); the hub's
watcher thread wakes the loop once per batch, and the channel hands the
batch to every reader's :class:`~trackbridge.events.stream.StreamState` in
one pass. A reader only appends references to its ``ready`` list and, when
its driver is waiting, resolves one future: a thousand readers of a run cost
a thousand list appends and task steps, no lock, queue or thread each.

A reader whose client does not keep up never slows the pass: once it holds
more than ``max_ready`` unsent events it is marked behind and catches up
from the durable log when its driver has written what it holds. Idle readers
get a heartbeat (``None``) from one shared timer, not a timer each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .hub import EventHub, SourceFactory
from .sources import EventSource
from .stream import HOLD_CHECK_S, Phase, StreamState

log = logging.getLogger(__name__)

#: Returned by :meth:`AsyncEventStream.next_batch` when the stream has ended.
END: list[dict[str, Any]] = []


class DirectWriter(Protocol):
    """A reader's socket as the fan-out's pass may write it: at once, or not at all."""

    def writable(self) -> bool:
        """Whether a write now goes out without queueing behind a slow client."""
        ...

    def write(self, events: list[dict[str, Any]]) -> None: ...


class AsyncFanout:
    """The asyncio side of an :class:`EventHub`: channels of one event loop, and its heartbeat timer."""

    def __init__(self, hub: EventHub, *, tick_s: float = 15.0, max_ready: int = 4096) -> None:
        if tick_s <= 0:
            raise ValueError(f"`tick_s` must be > 0, got {tick_s}")
        self.hub = hub
        self.tick_s = tick_s
        self.max_ready = max_ready
        self._channels: dict[str, _Channel] = {}
        self._opening: dict[str, asyncio.Future[_Channel]] = {}
        self._readers: set[AsyncEventStream] = set()
        self._heartbeat: asyncio.TimerHandle | None = None

    async def open(self, run_id: str, make_source: SourceFactory, after_id: int = 0) -> "AsyncEventStream":
        """A reader of ``run_id`` from ``after_id``: joined to the live feed first, then its history read.

        Raises what the source raises (``OSError``) before anything is sent.
        """
        loop = asyncio.get_running_loop()
        channel = await self._channel(run_id, make_source)
        channel._make_source = channel._make_source or make_source
        reader = AsyncEventStream(self, channel, after_id)
        channel.readers.add(reader)  # from here on, live events reach it (held until its history is in)
        self._readers.add(reader)
        self._start_heartbeat(loop)
        try:
            source = make_source()
            history, tail = await loop.run_in_executor(None, _read_history, source, after_id)
        except BaseException:
            reader.close()
            raise
        reader._begin(source, history, tail)
        return reader

    def close(self) -> None:
        """End every reader of this loop (the server is shutting down)."""
        for reader in list(self._readers):
            reader.close()

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    async def _channel(self, run_id: str, make_source: SourceFactory) -> "_Channel":
        channel = self._channels.get(run_id)
        if channel is not None:
            return channel
        pending = self._opening.get(run_id)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Channel] = loop.create_future()
        self._opening[run_id] = future
        try:
            # Blocking: starts the run's watcher thread and waits for its first read.
            subscription = await loop.run_in_executor(None, self.hub.subscribe, run_id, make_source)
            channel = _Channel(self, run_id, subscription, loop)
            self._channels[run_id] = channel
            future.set_result(channel)
            return channel
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._opening[run_id]

    def _forget(self, reader: "AsyncEventStream") -> None:
        self._readers.discard(reader)
        channel = reader.channel
        channel.readers.discard(reader)
        if not channel.readers and self._channels.get(channel.run_id) is channel:
            del self._channels[channel.run_id]
            channel.subscription.close()  # the watcher retires when its run has no subscriber left
        if not self._readers and self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def _start_heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._heartbeat is None:
            self._heartbeat = loop.call_later(self.tick_s, self._beat, loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        """One pass every ``tick_s``: readers that sent nothing since the last pass get a heartbeat."""
        for reader in list(self._readers):
            reader._tick()
        self._heartbeat = loop.call_later(self.tick_s, self._beat, loop) if self._readers else None


class _Channel:
    """One loop's subscription to one run, shared by all of that run's readers on the loop."""

    def __init__(self, fanout: AsyncFanout, run_id: str, subscription: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.fanout = fanout
        self.run_id = run_id
        self.subscription = subscription
        self.loop = loop
        self.readers: set[AsyncEventStream] = set()
        self._scheduled = False
        self._source: EventSource | None = None
        self._make_source: SourceFactory | None = None
        self._wanting: set[AsyncEventStream] = set()
        self._reading: asyncio.Task[None] | None = None
        subscription.waker = self._wake
        if subscription.ended:
            loop.call_soon(self._drain)

    def _wake(self) -> None:
        """Called in the publisher's thread after each batch: schedule one drain, however many batches."""
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass

    def _drain(self) -> None:
        self._scheduled = False
        subscription = self.subscription
        events = []
        while (event := subscription.get_nowait()) is not None:
            events.append(event)
        lost = subscription.overflowed
        if lost:
            subscription.reset()
        ended = subscription.ended
        for reader in list(self.readers):  # the one pass
            reader._deliver(events, lost, ended)

    # -- reads of the durable log, shared: one read answers every reader that needs one ---------
    def want_read(self, reader: "AsyncEventStream") -> None:
        """``reader`` must read the log after its ``last_id`` (it fell behind, or it checks its end)."""
        self._wanting.add(reader)
        if self._reading is None:
            self._reading = self.loop.create_task(self._read_rounds())

    async def _read_rounds(self) -> None:
        try:
            while self._wanting:
                readers, self._wanting = self._wanting, set()
                after = min(reader.state.last_id for reader in readers)
                if self._source is None:
                    self._source = self._make_source() if self._make_source else None
                events: list[dict[str, Any]] | None = None
                attached = False
                if self._source is not None:
                    try:
                        events = await self.loop.run_in_executor(None, self._source.read, after)
                        if any(reader.state.phase is Phase.ENDING for reader in readers):
                            attached = await self.loop.run_in_executor(None, self._source.attached)
                    except OSError as exc:  # MLflow down for a moment: the readers retry at the next tick
                        log.debug("catch-up read of run %s failed: %s", self.run_id, exc)
                for reader in readers:
                    reader._log_read(events, attached)
        finally:
            self._reading = None


class AsyncEventStream:
    """One asyncio reader of a run: ``await next_batch()`` until it returns :data:`END`.

    A batch is a list of events to send now (a burst arrives as one batch:
    one write), or ``None`` for a heartbeat. Always :meth:`close` it.
    """

    def __init__(self, fanout: AsyncFanout, channel: _Channel, after_id: int) -> None:
        self.fanout = fanout
        self.channel = channel
        self.run_id = channel.run_id
        self.state = StreamState(after_id)
        self.ready: list[dict[str, Any]] = []
        self._source: EventSource | None = None
        self._held: list[dict[str, Any]] | None = []  # live events that came before the history was read
        self._held_lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._active = True  # something was sent since the last heartbeat pass
        self._heartbeat_due = False
        self._read_failed = False  # the last log read failed: wait for a heartbeat pass before the next
        self._closed = False
        #: Set by a driver that can write without awaiting (``trackbridge serve``'s own protocol):
        #: the one pass then writes each batch itself, with no task to wake.
        self.direct: DirectWriter | None = None

    @property
    def last_id(self) -> int:
        return self.state.last_id

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """The next events to send, ``None`` for a heartbeat, or :data:`END`."""
        loop = self.channel.loop
        while True:
            if self.ready:
                batch, self.ready = self.ready, []
                self._active = True
                return batch
            if self._closed or self.state.done:
                self.close()
                return END
            if self.state.needs_read and not self._read_failed:
                self.channel.want_read(self)  # answered by _log_read
            if self._heartbeat_due:
                self._heartbeat_due = False
                return None
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.state.close()
        self._wake()
        self.fanout._forget(self)

    # -- called on the loop by the fan-out ------------------------------------------------
    def _begin(self, source: EventSource, history: list[dict[str, Any]], tail: dict[str, Any] | None) -> None:
        self._source = source
        self.ready.extend(self.state.start(history, tail))
        held, self._held = self._held or [], None
        if self._held_lost:
            self.state.lost()
        self._take(held)
        self._wake()

    def _deliver(self, events: list[dict[str, Any]], lost: bool, ended: bool) -> None:
        if ended:
            self.close()
            return
        if self._held is not None:  # still reading its history: keep them for _begin
            self._held.extend(events)
            self._held_lost = self._held_lost or lost
            return
        if lost:
            self.state.lost()
        direct = self.direct
        if direct is not None and self._waiter is not None and not self.ready and direct.writable():
            # Its driver is parked, nothing is queued before these: write them here, in the pass.
            out = self.state.from_live(events)
            if out:
                direct.write(out)
                self._active = True
            if self.state.needs_read:
                self._wake()  # the end check or a catch-up: the driver's work
            return
        self._take(events)
        self._wake()

    def _take(self, events: list[dict[str, Any]]) -> None:
        if len(self.ready) >= self.fanout.max_ready:
            self.state.lost()  # its client is slow: read what it misses from the log later
            return
        self.ready.extend(self.state.from_live(events))

    def _log_read(self, events: list[dict[str, Any]] | None, attached: bool = False) -> None:
        if self._closed:
            return
        if events is None:
            self._read_failed = True
        else:
            self.ready.extend(self.state.from_log(events, attached=attached))
            if self.state.held:  # look again soon whether the run's process let the run go
                self.channel.loop.call_later(HOLD_CHECK_S, self._recheck)
        self._wake()

    def _recheck(self) -> None:
        if self.state.held and not self._closed:
            self.state.tick()
            self._wake()

    def _tick(self) -> None:
        self._read_failed = False
        if self.state.held:
            self.state.tick()
            self._wake()  # its driver asks the log (and whether the run is still held) again
        if not self._active:
            self._heartbeat_due = True
            self._wake()
        self._active = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _read_history(source: EventSource, after_id: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    history = source.read(after_id)
    tail = source.last_event() if not history and after_id > 0 else None
    return history, tail
