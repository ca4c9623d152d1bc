"""Lightning callbacks: one per module; :func:`build_callbacks` assembles the stack."""

from .json_metric_logger import JSONMetricLogger
from .run_status_updater import RunStatusUpdater
from .sse_notifier import SSENotifier
from .stack import CallbackStack, build_callbacks
from .step_metrics import StepMetricsLogger, StepMetricsRecorder
from .stop_request import StopRequestWatcher
from .training_log import TrainingLogFile

__all__ = [
    "CallbackStack",
    "JSONMetricLogger",
    "RunStatusUpdater",
    "SSENotifier",
    "StepMetricsLogger",
    "StepMetricsRecorder",
    "StopRequestWatcher",
    "TrainingLogFile",
    "build_callbacks",
]
