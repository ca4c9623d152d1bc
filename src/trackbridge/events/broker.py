"""In-process fan-out: every subscriber of a run gets every event, none can block the producer."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable


_END = object()  # put in a buffer by end(): wakes a reader blocked in get()


class Subscription:
    """One reader's bounded buffer of a run's events.

    When the buffer is full the broker drops the event for this reader only
    and sets :attr:`overflowed`; the reader then catches up from events.jsonl
    (the durable log) after the last id it delivered, and calls :meth:`reset`.
    """

    def __init__(self, broker: "EventBroker", run_id: str, maxsize: int) -> None:
        self.run_id = run_id
        self.overflowed = False
        #: Set by :meth:`end` (the server is shutting down): the reader should stop.
        self.ended = False
        #: Called (from the publisher's thread) after each offer: how an asyncio reader is woken.
        #: It must not block and must not raise.
        self.waker: Callable[[], None] | None = None
        self._broker = broker
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize)

    def offer(self, event: dict[str, Any]) -> None:
        self.offer_many((event,))

    def offer_many(self, events: "Iterable[dict[str, Any]]") -> None:
        """Buffer ``events`` (dropping, and marking :attr:`overflowed`, what does not fit), then wake once."""
        for event in events:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.overflowed = True
                break
        if self.waker is not None:
            self.waker()

    def get_nowait(self) -> dict[str, Any] | None:
        """The next buffered event, or None."""
        try:
            event = self._queue.get_nowait()
        except queue.Empty:
            return None
        return None if event is _END else event

    def end(self) -> None:
        """Tell the reader to stop (sets :attr:`ended` and wakes it)."""
        self.ended = True
        try:
            self._queue.put_nowait(_END)  # type: ignore[arg-type]
        except queue.Full:
            pass  # a full buffer: the reader is not blocked, it sees `ended` at its next get
        if self.waker is not None:
            self.waker()

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if event is _END else event

    def reset(self) -> None:
        """Drop what is buffered and clear :attr:`overflowed` (before a catch-up read)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self.overflowed = False

    def close(self) -> None:
        self._broker.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBroker:
    """Publish/subscribe by run id, for servers that live in the training process."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._subscribers: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()

    def subscribe(self, run_id: str) -> Subscription:
        subscription = Subscription(self, run_id, self.maxsize)
        with self._lock:
            self._subscribers.setdefault(run_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.run_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.run_id]

    def has_subscribers(self, run_id: str) -> bool:
        with self._lock:
            return bool(self._subscribers.get(run_id))

    def publish(self, event: dict[str, Any], run_id: str | None = None) -> None:
        """Offer ``event`` to every subscriber of ``run_id`` (default: the event's ``run_id``)."""
        self.publish_many([event], run_id or event.get("run_id") or "")

    def publish_many(self, events: "list[dict[str, Any]]", run_id: str) -> None:
        """Offer a batch of one run's events to each subscriber at once (one wake per subscriber)."""
        if not events:
            return
        with self._lock:
            subscribers = list(self._subscribers.get(run_id, ()))
        for subscription in subscribers:
            subscription.offer_many(events)


_DEFAULT = EventBroker()


def default_broker() -> EventBroker:
    """The process's broker: the stack publishes to it, an in-process server reads it."""
    return _DEFAULT
