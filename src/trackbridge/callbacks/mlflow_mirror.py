"""MLflowMirror: the run's record, params, tags, datasets, images, artifacts and status → MLflow, off the training thread.

The callback only decides *when*: the run's writer thread hands over what it
wrote (step lines, epoch records, stages, system samples; the media thread,
images), and each goes to the run's
:class:`~trackbridge.mirror.worker.MirrorWorker`, which owns every MLflow
call through the run's :class:`~trackbridge.mirror.writer.RunWriter`.
Training never waits on MLflow, and an MLflow outage never fails it.

When fit ends (its ``teardown``), ``fit`` waits at most ``flush_timeout_s`` for the worker
to deliver the rest (last points, checkpoints, metrics.json, run.json,
training.log, the status, a registration), with the requests overlapped;
whatever does not make it is left in run.json's cursor for ``trackbridge sync``.
A ``validate``/``test`` stage after fit gets a worker of its own that sends
the stage's metrics (at step = the last fit epoch) and its dataset, and
leaves the MLflow status as fit set it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..config import TrackingConfig
from ..mirror.conventions import active_run, context_tags
from ..mirror.cursor import Cursor
from ..mirror.datasets import describe_datasets
from ..mirror.mapping import FINAL_ARTIFACTS, mlflow_status
from ..mirror.registry import class_path
from ..mirror.uri import resolve_tracking_uri
from ..mirror.worker import MirrorWorker, end_ms_now
from ..mirror.writer import RunWriter, spec_for
from ..record.jsonio import read_json, to_jsonable
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from .guard import tracking_hook
from .session import RunSession

log = logging.getLogger("trackbridge.mirror")

# How long a DDP rank zero waits in setup for the MLflow run id it broadcasts.
DDP_RUN_ID_WAIT_S = 10.0
STAGES = ("validate", "test")
# What the run's writer thread hands over once written, and the worker method that takes it.
SUBSCRIPTIONS = (("epoch", "log_epoch"), ("stage", "log_stage"), ("system", "log_system"))


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
        self._fitting = False
        self._train_ended = False

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
        if self.worker is not None:
            return self.worker.wait_for_run_id(timeout) or self._broadcast_run_id
        return self.mlflow_run_id

    def upload(self, relpath: str) -> None:
        """Upload ``run_dir/relpath`` as an artifact at the same path (e.g. config.yaml)."""
        if self.worker is not None:
            self.worker.upload(relpath)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params logged by ``logger.log_hyperparams`` at any time (new keys reach MLflow)."""
        if self.worker is not None:
            self.worker.log_params(params)

    # -- lifecycle -------------------------------------------------------------
    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" and (stage not in STAGES or self._fitting):
            return
        self.session.setup(trainer)
        if trainer.is_global_zero:
            self._fitting = stage == "fit"
            self.session.mirror = self
            self.worker = self._make_worker(trainer, pl_module, fit=self._fitting)
            self._start_and_subscribe(self.worker)
        if stage == "fit" and trainer.world_size > 1:
            # Every rank learns the run id; the wait is bounded and happens once, before training.
            if self.worker is not None:
                self.worker.wait_for_run_id(DDP_RUN_ID_WAIT_S)
            self._broadcast_run_id = trainer.strategy.broadcast(self.mlflow_run_id, src=0)

    def _make_worker(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fit: bool) -> MirrorWorker:
        if fit:
            self._adopt_active_run()
        spec = spec_for(self.run_dir, extra_params=_model_hparams(trainer, pl_module),
                        module_class=class_path(type(pl_module)))
        return MirrorWorker(
            RunWriter(self.run_dir, spec),
            flush_timeout_s=self.config.flush_timeout_s,
            context_tags=context_tags if fit else None,  # a stage after fit keeps the run's
            mark_running=fit,
        )

    def _adopt_active_run(self) -> None:
        """An ``mlflow.start_run()`` run active on this thread is mirrored into, not duplicated."""
        active = active_run()
        if active is None:
            return
        run_id, uri = active
        cursor = Cursor(self.run_dir)
        if cursor.read()["run_id"] == run_id:
            return
        if self.config.tracking_uri and self.config.tracking_uri != uri:
            log.warning("the active MLflow run %s is on %s, the config names %s: not adopting it",
                        run_id, uri, self.config.tracking_uri)
            return
        cursor.update(run_id=run_id, adopted=True, tracking_uri=uri, experiment=None, experiment_id=None)

    def _start_and_subscribe(self, worker: MirrorWorker) -> None:
        """Start the worker and give it what the local record holds from then on (never what it does not).

        Both happen in the record writer's thread, between two of its waves:
        what is written before is history the worker replays from the files,
        what is written after reaches it from the writer, and no line is both.
        """
        writer = self.session.writer

        def attach() -> None:
            worker.start()
            if writer is not None:
                writer.subscribe("steps", self._on_steps)
                for kind, method in SUBSCRIPTIONS:
                    writer.subscribe(kind, getattr(worker, method))
            media = getattr(self.session, "media", None)
            if media is not None and hasattr(media, "mirror_hook"):
                media.mirror_hook = worker.log_media  # called once an entry's line is written

        if writer is None:
            attach()
        else:
            writer.call(attach, wake=True)

    def _unsubscribe(self, worker: MirrorWorker) -> None:
        writer = self.session.writer
        if writer is not None:
            writer.unsubscribe("steps", self._on_steps)
            for kind, method in SUBSCRIPTIONS:
                writer.unsubscribe(kind, getattr(worker, method))
        media = getattr(self.session, "media", None)
        if media is not None and getattr(media, "mirror_hook", None) == worker.log_media:
            media.mirror_hook = None

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.worker is None:
            return
        datamodule = getattr(trainer, "datamodule", None)
        self.worker.log_inputs(describe_datasets(datamodule, _loaders(trainer, "fit")))
        self.session.flush(2.0)  # params and a config file recorded in setup are in run.json now
        run = self.run_dir.read_run()
        self.worker.log_params(run.get("logged_hyperparameters") or {})
        if run.get("config_file") and (self.run_dir.path / run["config_file"]).is_file():
            self.worker.upload(run["config_file"])
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
        # The end goes out in teardown: Lightning may still log the last step's metrics after
        # on_train_end (a stopped run's last batch), and the record takes them.
        self._train_ended = self._fitting

    @tracking_hook
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.worker is None or not self._fitting:
            return
        self.session.flush()  # the last lines reach the worker (and a worker not started yet starts)
        if not self.worker.alive:
            return
        status, error = self.session.outcome(exception)
        self._finish(status, pl_module, error)

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        worker = self.worker
        if worker is None:
            return
        self.session.flush()  # the last lines reach the worker through the writer
        if worker.alive:
            if stage in STAGES and not self._fitting:
                self._finish_stage(trainer, stage)
            elif self._train_ended:
                status, _ = self.session.outcome()
                self._finish(status, pl_module)
            else:  # fit ended without training (an error before it began was on_exception's)
                worker.close(self.config.flush_timeout_s)
        if stage == "fit":
            self._fitting = self._train_ended = False
        self._unsubscribe(worker)

    def _finish_stage(self, trainer: pl.Trainer, stage: str) -> None:
        """A validate/test after fit: its stage entry (written by now), its dataset, the files; no status."""
        worker = self.worker
        assert worker is not None
        try:
            stages = read_json(self.run_dir.metrics_json).get("stages") or []
        except (FileNotFoundError, ValueError):
            stages = []
        for entry in stages:  # handed over by the writer too: the worker takes each once
            worker.log_stage(entry)
        context = "test" if stage == "test" else "validation"
        datasets = [d for d in describe_datasets(getattr(trainer, "datamodule", None), _loaders(trainer, stage))
                    if d["context"] == context]
        if datasets:
            worker.log_inputs(datasets)
        worker.end_run(None, None, list(FINAL_ARTIFACTS), None, self.config.flush_timeout_s)
        worker.close(self.config.flush_timeout_s)

    # -- what goes to the worker ---------------------------------------------
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


def _loaders(trainer: pl.Trainer, stage: str) -> dict[str, Any]:
    """The Trainer's loaders by MLflow context, for datasets a data module does not name."""
    names = {"fit": (("training", "train_dataloader"), ("validation", "val_dataloaders")),
             "validate": (("validation", "val_dataloaders"),), "test": (("test", "test_dataloaders"),)}[stage]
    loaders = {}
    for context, attribute in names:
        try:
            loader = getattr(trainer, attribute)
        except Exception:  # Lightning raises when a loop has no data yet
            loader = None
        if loader is not None:
            loaders[context] = loader
    return loaders


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
