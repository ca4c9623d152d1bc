"""Events (DESIGN §4): their shapes, the durable events.jsonl log, in-process fan-out, and sources."""

from .broker import EventBroker, Subscription, default_broker
from .emitter import EventEmitter
from .fanout import AsyncEventStream, AsyncFanout
from .hub import EventHub
from .lifecycle import mark_dead_runs
from .log import EventLog, read_events
from .sources import (
    EventSource,
    FileEventSource,
    MlflowEventSource,
    SourceUnavailableError,
    find_mlflow_run,
)
from .stream import EventStream, StreamState
from .types import TERMINAL_EVENT_TYPES, EventType, terminal_event_type

__all__ = [
    "TERMINAL_EVENT_TYPES",
    "AsyncEventStream",
    "AsyncFanout",
    "EventBroker",
    "EventEmitter",
    "EventHub",
    "EventLog",
    "EventSource",
    "EventStream",
    "EventType",
    "FileEventSource",
    "MlflowEventSource",
    "SourceUnavailableError",
    "StreamState",
    "Subscription",
    "default_broker",
    "find_mlflow_run",
    "mark_dead_runs",
    "read_events",
    "terminal_event_type",
]
