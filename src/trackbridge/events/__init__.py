"""Events (DESIGN §4): their shapes, the durable events.jsonl log, and in-process fan-out."""

from .broker import EventBroker, default_broker
from .emitter import EventEmitter
from .lifecycle import mark_dead_runs
from .log import EventLog, read_events
from .types import TERMINAL_EVENT_TYPES, EventType, terminal_event_type

__all__ = [
    "TERMINAL_EVENT_TYPES",
    "EventBroker",
    "EventEmitter",
    "EventLog",
    "EventType",
    "default_broker",
    "mark_dead_runs",
    "read_events",
    "terminal_event_type",
]
