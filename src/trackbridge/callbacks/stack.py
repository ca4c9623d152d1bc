"""build_callbacks: the whole callback stack of DESIGN §3 from one TrackingConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..config import TrackingConfig
from ..events.lifecycle import mark_dead_runs
from ..record.ids import new_run_id
from ..record.run_dir import RunDirectory, RunExistsError, RunNotFoundError
from ..record.status import RunStatus
from .checkpoints import best_checkpoint, last_checkpoint
from .clock import RunClock
from .composite import TrackbridgeCallback
from .input_example import InputExampleRecorder
from .json_metric_logger import JSONMetricLogger
from .logger import LoggerAttacher, TrackbridgeLogger
from .media_recorder import MediaEvents, MediaRecorder
from .run_status_updater import RunStatusUpdater
from .session import RunSession
from .sse_notifier import SSENotifier
from .stop_request import StopRequestWatcher
from .system_metrics import SystemMetricsSampler
from .training_log import TrainingLogFile


class CallbackStack(list):
    """The list of callbacks for ``Trainer(callbacks=...)``, plus the run it records.

    The list holds trackbridge's parts behind one :class:`TrackbridgeCallback`
    (see :mod:`.composite` for why), EarlyStopping and the two
    ModelCheckpoints. ``stack.parts`` lists every callback of DESIGN §3 the
    stack runs; ``stack.logger`` is the run's Lightning logger
    (``Trainer(logger=stack.logger)``); ``stack.session`` what they share.
    """

    def __init__(
        self, callbacks: list[pl.Callback], config: TrackingConfig, session: RunSession, logger: TrackbridgeLogger
    ) -> None:
        super().__init__(callbacks)
        self.config = config
        self.session = session
        self.logger = logger

    @property
    def parts(self) -> list[pl.Callback]:
        """Every callback the stack runs, trackbridge's parts unfolded, in order."""
        unfolded: list[pl.Callback] = []
        for callback in self:
            unfolded += callback.parts if isinstance(callback, TrackbridgeCallback) else [callback]
        return unfolded

    @property
    def run_dir(self) -> RunDirectory:
        """The run's directory; on DDP ranks other than zero, right once ``fit`` has set up."""
        assert self.session.run_dir is not None
        return self.session.run_dir

    @property
    def run_id(self) -> str:
        return self.run_dir.run_id

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is left of the record and stop its thread (also done at interpreter exit)."""
        return self.session.close(timeout)


def build_callbacks(config: TrackingConfig) -> CallbackStack:
    """Create (or reopen, when resuming) the run directory and return its callback stack.

    Only global rank zero touches the disk: in a DDP run launched as
    subprocesses the other ranks build the stack too, and must not create a
    second run. The heartbeat starts now, so a run still ``pending`` (data
    being prepared before ``fit``) is alive while its process lives.
    """
    if config.run_id is None:
        config = dataclasses.replace(config, run_id=new_run_id())
    run_dir = RunDirectory(config.runs_root, config.run_id)
    session = RunSession(run_dir, config=config)
    if _is_global_zero():
        _prepare(session, config)
    else:
        session.writes = False
    first_event_id = session.writer.events.last_id() + 1 if session.writer is not None else 1

    logger = TrackbridgeLogger(session)
    parts: list[pl.Callback] = [
        RunClock(session),
        InputExampleRecorder(session),
        TrainingLogFile(run_dir.training_log, session=session),
        StopRequestWatcher(run_dir.stop_request, session=session),
        LoggerAttacher(logger),
        LearningRateMonitor(logging_interval="epoch"),
        # before the writers of the terminal event, so the run's media are all in first
        MediaRecorder(
            run_dir.path,
            config.task,
            every_n_epochs=config.media_every_n_epochs,
            samples=config.media_samples,
            max_side=config.media_max_side,
            max_bytes=config.media_max_bytes,
            session=session,
            event_hook=MediaEvents(session),  # each media.jsonl entry becomes a `media` event
        ),
        # metrics.json first: the local record is written before any view of it
        JSONMetricLogger(run_dir.metrics_json, session=session),
        RunStatusUpdater(
            run_dir.run_json,
            monitor=config.resolved_monitor,
            mode=config.resolved_mode,
            heartbeat_interval_s=config.heartbeat_interval_s,
            session=session,
        ),
        SSENotifier(
            session.events,
            run_dir.run_id,
            first_id=first_event_id,
            progress_interval_s=config.progress_interval_s,
            session=session,
        ),
    ]
    if config.system_metrics_interval_s > 0:
        parts.append(SystemMetricsSampler(session, config.system_metrics_interval_s))
    if config.mlflow:
        parts.append(_mlflow_mirror(config, session))
    callbacks: list[pl.Callback] = [TrackbridgeCallback(parts)]
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
    # Lightning moves checkpoint callbacks last; the best one first keeps it trainer.checkpoint_callback.
    callbacks += [
        best_checkpoint(run_dir.checkpoints_dir, config.resolved_monitor, config.resolved_mode),
        last_checkpoint(run_dir.checkpoints_dir),
    ]
    return CallbackStack(callbacks, config, session, logger)


def _mlflow_mirror(config: TrackingConfig, session: RunSession) -> pl.Callback:
    from .mlflow_mirror import MLflowMirror  # imports mlflow lazily, only when mirroring

    return MLflowMirror(config, session)


def _prepare(session: RunSession, config: TrackingConfig) -> None:
    run_dir = session.run_dir
    assert run_dir is not None
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
        session.writer  # noqa: B018 - the heartbeat of the reopened run
        return
    session.create_run(_run_fields(config))


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
