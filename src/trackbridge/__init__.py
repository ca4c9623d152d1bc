"""trackbridge: one callback stack for PyTorch Lightning runs.

It keeps a durable local record of each run (``runs/<run-id>/``), mirrors it
into MLflow, and streams it live over HTTP. ``import trackbridge`` is cheap:
names that need Lightning, MLflow or Flask are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import TrackingConfig
from .events import EventBroker, EventHub, EventLog, EventStream, EventType, FileEventSource, MlflowEventSource, mark_dead_runs
from .record import (
    InvalidRunIdError,
    InvalidTransitionError,
    JsonlAppender,
    LivenessJudge,
    ProcessIdentity,
    RunDirectory,
    RunExistsError,
    RunNotFoundError,
    RunStatus,
    find_dead_runs,
    new_run_id,
    validate_run_id,
)
from .tasks import TASKS, TaskSpec, UnknownTaskError, get_task

__version__ = "0.1.0"

# name -> module that defines it, imported on first attribute access (PEP 562)
_LAZY = {
    "CallbackStack": "trackbridge.callbacks",
    "JSONMetricLogger": "trackbridge.callbacks",
    "LightningCLIConfig": "trackbridge.callbacks",
    "RunStatusUpdater": "trackbridge.callbacks",
    "SSENotifier": "trackbridge.callbacks",
    "RunSession": "trackbridge.callbacks",
    "StopRequestWatcher": "trackbridge.callbacks",
    "SystemMetricsSampler": "trackbridge.callbacks",
    "TrackbridgeLogger": "trackbridge.callbacks",
    "TrainingLogFile": "trackbridge.callbacks",
    "build_callbacks": "trackbridge.callbacks",
    "MLflowMirror": "trackbridge.callbacks.mlflow_mirror",
    "RegistrationError": "trackbridge.mirror.registry",
    "register_run": "trackbridge.mirror.sync",
    "SyncResult": "trackbridge.mirror.sync",
    "sync_run": "trackbridge.mirror.sync",
    "WebSettings": "trackbridge.web",
    "create_app": "trackbridge.web",
    "create_blueprint": "trackbridge.web",
    "create_dashboard_blueprint": "trackbridge.web.dashboard",
}

__all__ = sorted(
    [
        "EventBroker",
        "EventHub",
        "EventLog",
        "EventStream",
        "EventType",
        "FileEventSource",
        "InvalidRunIdError",
        "InvalidTransitionError",
        "JsonlAppender",
        "LivenessJudge",
        "MlflowEventSource",
        "ProcessIdentity",
        "RunDirectory",
        "RunExistsError",
        "RunNotFoundError",
        "RunStatus",
        "TASKS",
        "TaskSpec",
        "TrackingConfig",
        "UnknownTaskError",
        "__version__",
        "find_dead_runs",
        "get_task",
        "mark_dead_runs",
        "new_run_id",
        "validate_run_id",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trackbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .callbacks import (
        CallbackStack,
        JSONMetricLogger,
        RunStatusUpdater,
        SSENotifier,
        RunSession,
        StopRequestWatcher,
        SystemMetricsSampler,
        TrackbridgeLogger,
        TrainingLogFile,
        build_callbacks,
    )
    from .callbacks.mlflow_mirror import MLflowMirror
    from .mirror.registry import RegistrationError
    from .mirror.sync import SyncResult, register_run, sync_run
    from .web import WebSettings, create_app, create_blueprint
    from .web.dashboard import create_dashboard_blueprint
