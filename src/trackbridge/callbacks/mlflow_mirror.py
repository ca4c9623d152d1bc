"""MLflowMirror: the run's record, params, tags, artifacts and status → MLflow, off the training thread.

The callback only decides *when*: each hook hands an item to the run's
:class:`~trackbridge.mirror.worker.MirrorWorker`, which owns every MLflow
call. Training never waits on MLflow, and an MLflow outage never fails it.

When training ends, ``fit`` waits at most ``flush_timeout_s`` for the worker
to deliver the rest (last points, checkpoints, metrics.json, run.json,
training.log, the status, a registration), with the requests overlapped;
whatever does not make it is left in run.json's cursor for ``trackbridge sync``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..config import TrackingConfig
from ..mirror.mapping import iso_to_ms, mlflow_status, run_params, run_tags
from ..mirror.registry import class_path
from ..mirror.uri import resolve_tracking_uri
from ..mirror.worker import MirrorWorker, end_ms_now
from ..record.jsonio import to_jsonable
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from .guard import tracking_hook
from .session import RunSession

FINAL_ARTIFACTS = ("metrics.json", "run.json", "logs/training.log")
# How long a DDP rank zero waits in setup for the MLflow run id it broadcasts.
DDP_RUN_ID_WAIT_S = 10.0


class MLflowMirror(pl.Callback):
    """Mirror the run of ``session`` into MLflow as ``config`` says (DESIGN §6).

    The run's writer thread hands over what it wrote: each step line is
    mirrored too, at ``step = global step``. :attr:`mlflow_run_id`
    is the MLflow run's id once known; in a DDP run every rank gets it from
    rank zero in ``setup``, and only rank zero talks to MLflow.
    """

    def __init__(self, config: TrackingConfig, session: RunSession) -> None:
        self.config = config
        self.session = session
        self.worker: MirrorWorker | None = None
        self.delivered: bool | None = None  # after fit: did everything reach MLflow in time?
        self._broadcast_run_id: str | None = None
        self._mtimes: dict[str, int | None] = {}

    @property
    def mlflow_run_id(self) -> str | None:
        if self.worker is not None and self.worker.mlflow_run_id:
            return self.worker.mlflow_run_id
        return self._broadcast_run_id

    @property
    def run_dir(self) -> RunDirectory:
        assert self.session.run_dir is not None
        return self.session.run_dir

    @property
    def tracking_uri(self) -> str | None:
        return self.worker.tracking_uri if self.worker is not None else resolve_tracking_uri(self.config.tracking_uri)

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "session": self.session}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["session"])  # type: ignore[misc]

    # -- what the Lightning logger asks ------------------------------------------------------
    def wait_for_run_id(self, timeout: float) -> str | None:
        """The MLflow run id, waiting up to ``timeout`` s for the worker's first connection."""
        if self.worker is not None and self.worker.mlflow_run_id is None:
            self.worker.ready.wait(timeout)
        return self.mlflow_run_id

    def upload(self, relpath: str) -> None:
        """Upload ``run_dir/relpath`` as an artifact at the same path (e.g. config.yaml)."""
        if self.worker is not None:
            self.worker.upload(relpath)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params logged by ``logger.log_hyperparams`` at any time (new keys reach MLflow)."""
        if self.worker is not None and hasattr(self.worker, "log_params"):
            self.worker.log_params(params)

    # -- lifecycle -------------------------------------------------------------
    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.session.setup(trainer)
        if trainer.is_global_zero:
            self.session.mirror = self
            self.worker = self._make_worker(trainer, pl_module)
            self.worker.start()
            writer = self.session.writer
            if writer is not None:  # the mirror gets what the local record holds, once it holds it
                writer.subscribe("steps", self._on_steps)
                writer.subscribe("epoch", self._on_epoch)
        if trainer.world_size > 1:
            # Every rank learns the run id; the wait is bounded and happens once, before training.
            if self.worker is not None:
                self.worker.ready.wait(DDP_RUN_ID_WAIT_S)
            self._broadcast_run_id = trainer.strategy.broadcast(self.mlflow_run_id, src=0)

    def _make_worker(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> MirrorWorker:
        from .. import __version__

        run = self.run_dir.read_run()
        started = run.get("started_at") or run.get("created_at")
        return MirrorWorker(
            self.run_dir,
            tracking_uri=resolve_tracking_uri(self.config.tracking_uri),
            experiment=self.config.experiment,
            params=run_params(run, _model_hparams(trainer, pl_module)),
            tags=run_tags(run, __version__),
            start_ms=iso_to_ms(started) if started else None,
            resume=self.config.resume,
            module_class=class_path(type(pl_module)),
            flush_timeout_s=self.config.flush_timeout_s,
        )

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.worker is None:
            return
        if self.config.resume:
            # metrics.json and steps.jsonl are cut back to the checkpoint by now
            self.worker.reconcile(trainer.current_epoch, trainer.global_step)
        self._mtimes = {path: _mtime(self.run_dir.path / path) for path in self._checkpoint_paths()}

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.epoch_started(trainer)

    @tracking_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.worker is None:
            return
        self._upload_changed_checkpoints()

    @tracking_hook
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.worker is None:
            return
        status, _ = self.session.outcome()
        self.session.flush()  # the last step lines reach the worker through the writer
        self._finish(status, pl_module)

    @tracking_hook
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.worker is None:
            return
        status, error = self.session.outcome(exception)
        self.session.flush()
        self._finish(status, pl_module, error)

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.worker is not None and self.worker.alive:  # fit ended without on_train_end/on_exception
            self.worker.close(self.config.flush_timeout_s)
        writer = self.session.writer
        if writer is not None:
            writer.unsubscribe("steps", self._on_steps)
            writer.unsubscribe("epoch", self._on_epoch)

    # -- what goes to the worker ---------------------------------------------
    def _on_epoch(self, record: dict[str, Any]) -> None:
        if self.worker is not None:
            self.worker.log_epoch(record)

    def _on_steps(self, lines: list[dict[str, Any]]) -> None:
        if self.worker is not None:
            for line in lines:
                self.worker.log_step(line)

    def _checkpoint_paths(self) -> list[str]:
        if self.config.mirror_checkpoints == "none":
            return []
        return [_relative(self.run_dir, self.run_dir.best_ckpt), _relative(self.run_dir, self.run_dir.last_ckpt)]

    def _upload_changed_checkpoints(self) -> None:
        """Queue best/last.ckpt when they changed on disk (the worker uploads the newest)."""
        for path in self._checkpoint_paths():
            if self._changed(path):
                self.worker.upload(path)  # type: ignore[union-attr]

    def _changed(self, path: str) -> bool:
        mtime = _mtime(self.run_dir.path / path)
        if mtime is None or mtime == self._mtimes.get(path):
            return False
        self._mtimes[path] = mtime
        return True

    def _finish(self, status: RunStatus, pl_module: pl.LightningModule, error: str | None = None) -> None:
        worker = self.worker
        assert worker is not None
        uploads = [path for path in self._checkpoint_paths() if self._changed(path)] + list(FINAL_ARTIFACTS)
        register = None
        if self.config.register_model and status is RunStatus.COMPLETED and self.run_dir.best_ckpt.is_file():
            register = (self.config.register_model, self.config.register_alias, type(pl_module))
        worker.end_run(
            mlflow_status(status), end_ms_now(), uploads, register, self.config.flush_timeout_s, error=error
        )
        self.delivered = worker.close(self.config.flush_timeout_s)


def _model_hparams(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The model's and the datamodule's saved hyperparameters, as Lightning's loggers get them."""
    merged: dict[str, Any] = {}
    datamodule = getattr(trainer, "datamodule", None)
    for source in (getattr(datamodule, "hparams", None), getattr(pl_module, "hparams", None)):
        if source:
            merged.update(to_jsonable(dict(source)))
    return merged


def _relative(run_dir: RunDirectory, path: Path) -> str:
    return path.relative_to(run_dir.path).as_posix()


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
