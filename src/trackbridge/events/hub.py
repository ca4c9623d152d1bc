"""EventHub: live events of any run for many readers in one server process.

One watcher thread per watched run polls the run's source (events.jsonl, or
the MLflow run) and publishes what is new to an :class:`EventBroker`; every
reader holds a bounded :class:`Subscription`. So a thousand readers of a run
cost one poll, not a thousand, and a reader that stops reading fills only its
own buffer: the watcher, the other readers and the training never wait on it.
A watcher stops when its run has no reader left.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Callable

from .broker import EventBroker, Subscription
from .sources import EventSource

log = logging.getLogger(__name__)

SourceFactory = Callable[[], EventSource]


class EventHub:
    """Subscribe readers to runs; watch each run's source while it has readers.

    ``broker`` may be the training process's own broker
    (:func:`~trackbridge.events.default_broker`): events published there by
    the run's :class:`~trackbridge.events.EventLog` then reach readers without
    waiting for the next poll; the watcher's copies carry the same ids and
    readers drop them.
    """

    def __init__(self, broker: EventBroker | None = None) -> None:
        self.broker = broker or EventBroker()
        self._watchers: dict[str, _Watcher] = {}
        self._subscriptions: "weakref.WeakSet[Subscription]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def subscribe(self, run_id: str, make_source: SourceFactory) -> Subscription:
        """A subscription to ``run_id``'s live events.

        The run's watcher is started (with a source from ``make_source``) and
        has taken note of the events already in the source before this
        returns, so a reader that reads the source's history after
        subscribing misses nothing: everything newer is published to it.
        """
        with self._lock:
            subscription = self.broker.subscribe(run_id)
            self._subscriptions.add(subscription)
            if self._closed.is_set():
                subscription.end()
            watcher = self._watchers.get(run_id)
            created = watcher is None
            if watcher is None:
                watcher = self._watchers[run_id] = _Watcher(self, run_id, make_source)
        if created:
            watcher.start()
        watcher.ready.wait()
        return subscription

    def watched_runs(self) -> list[str]:
        with self._lock:
            return sorted(self._watchers)

    def close(self) -> None:
        """Stop every watcher and end every reader's stream (a server shutting down)."""
        with self._lock:
            self._closed.set()
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.end()

    def _retire(self, watcher: "_Watcher") -> bool:
        """True (and forget ``watcher``) when its run has no subscriber left."""
        with self._lock:
            if not self._closed.is_set() and self.broker.has_subscribers(watcher.run_id):
                return False
            if self._watchers.get(watcher.run_id) is watcher:
                del self._watchers[watcher.run_id]
            return True


class _Watcher(threading.Thread):
    def __init__(self, hub: EventHub, run_id: str, make_source: SourceFactory) -> None:
        super().__init__(name=f"trackbridge-watch-{run_id}", daemon=True)
        self.hub = hub
        self.run_id = run_id
        self.source = make_source()
        self.ready = threading.Event()
        self.last_id = 0
        self._failing = False

    def run(self) -> None:
        source = self.source
        try:
            self.last_id = max((e["id"] for e in self._read(source)), default=0)
        finally:
            self.ready.set()
        while not self.hub._closed.wait(source.poll_interval_s):
            if self.hub._retire(self):
                return
            new = [event for event in self._read(source) if event["id"] > self.last_id]
            if new:
                self.last_id = new[-1]["id"]
                self.hub.broker.publish_many(new, self.run_id)
        self.hub._retire(self)

    def _read(self, source: EventSource) -> list[dict]:
        try:
            events = source.read(self.last_id)
        except OSError as exc:  # SourceUnavailableError, or a file the server may not read
            if not self._failing:
                log.warning("cannot read the events of run %s (will keep trying): %s", self.run_id, exc)
            self._failing = True
            return []
        if self._failing:
            log.warning("the events of run %s are readable again", self.run_id)
            self._failing = False
        return events


__all__ = ["EventHub", "SourceFactory", "Subscription"]
