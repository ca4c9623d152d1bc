"""Lightning callbacks: one per module; :func:`build_callbacks` assembles the stack."""

from typing import Any

from .json_metric_logger import JSONMetricLogger
from .logger import TrackbridgeLogger
from .run_status_updater import RunStatusUpdater
from .session import RunSession
from .sse_notifier import SSENotifier
from .stack import CallbackStack, build_callbacks
from .stop_request import StopRequestWatcher
from .system_metrics import SystemMetricsSampler
from .training_log import TrainingLogFile

__all__ = [
    "CallbackStack",
    "JSONMetricLogger",
    "LightningCLIConfig",
    "RunSession",
    "RunStatusUpdater",
    "SSENotifier",
    "StopRequestWatcher",
    "SystemMetricsSampler",
    "TrackbridgeLogger",
    "TrainingLogFile",
    "build_callbacks",
]


def __getattr__(name: str) -> Any:
    # LightningCLIConfig imports lightning.pytorch.cli and jsonargparse (tens of ms): only when asked for
    if name == "LightningCLIConfig":
        from .lightning_cli import LightningCLIConfig

        return LightningCLIConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
