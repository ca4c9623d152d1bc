"""build_callbacks: the whole callback stack of DESIGN §3 from one TrackingConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..config import TrackingConfig
from ..events.broker import default_broker
from ..events.lifecycle import mark_dead_runs
from ..events.log import EventLog
from ..record.ids import new_run_id
from ..record.run_dir import RunDirectory, RunExistsError, RunNotFoundError
from ..record.status import RunStatus
from .checkpoints import best_checkpoint, last_checkpoint
from .json_metric_logger import JSONMetricLogger
from .run_status_updater import RunStatusUpdater
from .sse_notifier import SSENotifier
from .step_metrics import StepMetricsRecorder
from .stop_request import StopRequestWatcher
from .training_log import TrainingLogFile


class CallbackStack(list):
    """The list of callbacks for ``Trainer(callbacks=...)``, plus the run it records."""

    def __init__(self, callbacks: list[pl.Callback], config: TrackingConfig) -> None:
        super().__init__(callbacks)
        self.config = config
        self._watcher = next(cb for cb in callbacks if isinstance(cb, StopRequestWatcher))

    @property
    def run_dir(self) -> RunDirectory:
        """The run's directory; on DDP ranks other than zero, right once ``fit`` has set up."""
        return RunDirectory.from_file(self._watcher.request_path)

    @property
    def run_id(self) -> str:
        return self.run_dir.run_id


def build_callbacks(config: TrackingConfig) -> CallbackStack:
    """Create (or reopen, when resuming) the run directory and return its callback stack.

    Only global rank zero touches the disk: in a DDP run launched as
    subprocesses the other ranks build the stack too, and must not create a
    second run.
    """
    if config.run_id is None:
        config = dataclasses.replace(config, run_id=new_run_id())
    run_dir = RunDirectory(config.runs_root, config.run_id)
    if _is_global_zero():
        _prepare(run_dir, config)
        first_event_id = EventLog(run_dir.events_jsonl).last_id() + 1
    else:
        first_event_id = 1

    callbacks: list[pl.Callback] = [
        TrainingLogFile(run_dir.training_log),
        StopRequestWatcher(run_dir.stop_request),
        StepMetricsRecorder(run_dir.steps_jsonl, run_dir.run_id),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if config.early_stopping_patience > 0:
        callbacks.append(
            EarlyStopping(
                monitor="val_loss",
                mode="min",
                min_delta=1e-4,
                patience=config.early_stopping_patience,
                verbose=True,
            )
        )
    callbacks += [
        # metrics.json first: the local record is written before any view of it
        JSONMetricLogger(run_dir.metrics_json),
        RunStatusUpdater(
            run_dir.run_json,
            monitor=config.resolved_monitor,
            mode=config.resolved_mode,
            heartbeat_interval_s=config.heartbeat_interval_s,
        ),
        SSENotifier(
            EventLog(run_dir.events_jsonl, broker=default_broker()),
            run_dir.run_id,
            first_id=first_event_id,
            progress_interval_s=config.progress_interval_s,
        ),
    ]
    if config.mlflow:
        callbacks.append(_mlflow_mirror(config, run_dir, callbacks))
    # Lightning moves checkpoint callbacks last; the best one first keeps it trainer.checkpoint_callback.
    callbacks += [
        best_checkpoint(run_dir.checkpoints_dir, config.resolved_monitor, config.resolved_mode),
        last_checkpoint(run_dir.checkpoints_dir),
    ]
    return CallbackStack(callbacks, config)


def _mlflow_mirror(config: TrackingConfig, run_dir: RunDirectory, callbacks: list[pl.Callback]) -> pl.Callback:
    from .mlflow_mirror import MLflowMirror  # imports mlflow lazily, only when mirroring

    step_recorder = next(cb for cb in callbacks if isinstance(cb, StepMetricsRecorder))
    return MLflowMirror(config, run_dir, step_logger=step_recorder.logger)


def _prepare(run_dir: RunDirectory, config: TrackingConfig) -> None:
    if config.resume:
        if not run_dir.exists():
            raise RunNotFoundError(
                f"cannot resume run {run_dir.run_id!r}: it does not exist in {run_dir.runs_root}"
            )
        mark_dead_runs(run_dir.runs_root)
        status = run_dir.read_run().get("status")
        if status in (RunStatus.PENDING.value, RunStatus.RUNNING.value):
            raise RunExistsError(
                f"run {run_dir.run_id!r} is still {status}; stop it before resuming it"
            )
        if not run_dir.last_ckpt.is_file():
            raise RunNotFoundError(
                f"cannot resume run {run_dir.run_id!r}: it has no {run_dir.last_ckpt}"
            )
        run_dir.clear_stop_request()
        return
    run_dir.create(_run_fields(config))


def _run_fields(config: TrackingConfig) -> dict[str, Any]:
    from .. import __version__

    fields = {
        "task": config.task,
        "monitor": config.resolved_monitor,
        "mode": config.resolved_mode,
        "hyperparameters": dict(config.hyperparameters),
        "config": config.to_dict(),
        "trackbridge_version": __version__,
    }
    if config.mlflow:
        fields["mlflow"] = cursor = _mlflow_cursor(config)
        fields["config"]["experiment"] = cursor["experiment"]  # resolved, as monitor and mode are
    return fields


def _mlflow_cursor(config: TrackingConfig) -> dict[str, Any]:
    """Where the run will be mirrored, resolved now (config, else MLflow's environment variables).

    ``trackbridge sync`` reads it later, from whatever shell, and goes to the same place.
    """
    from ..mirror.conventions import resolve_experiment, run_id_to_adopt
    from ..mirror.cursor import initial_cursor
    from ..mirror.uri import resolve_tracking_uri

    experiment = resolve_experiment(config.experiment)
    return initial_cursor(resolve_tracking_uri(config.tracking_uri), experiment.name, experiment.id, run_id_to_adopt())


def _is_global_zero() -> bool:
    # Lightning sets this from the launcher's environment (RANK, LOCAL_RANK, ...) at import time.
    return getattr(rank_zero_only, "rank", 0) == 0
