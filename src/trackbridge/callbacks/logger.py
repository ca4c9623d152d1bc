"""TrackbridgeLogger: trackbridge as Lightning's ``self.logger``, so existing logger code keeps working.

``Trainer(callbacks=stack, logger=stack.logger)``. What Lightning and user
code call on a logger lands in the run's record:

- ``log_metrics`` → steps.jsonl at the given step (what ``self.log(...,
  on_step=True)`` logs during training steps, and any direct call, e.g. from
  LearningRateMonitor or the user); Lightning's epoch-end calls are left out,
  the epoch record (metrics.json, ``step = epoch`` in MLflow) holds those;
- ``log_hyperparams`` → run.json ``logged_hyperparameters`` and MLflow params,
  under their own names (as Lightning's MLFlowLogger logs them);
- ``log_image`` / ``log_figure`` → media/ and media.jsonl;
- ``experiment`` → an ``MlflowClient`` bound to the run's tracking server
  (None with the mirror off); ``run_id`` → the MLflow run id (asking waits,
  boundedly, for the mirror to have created it; None with one warning when
  MLflow is unreachable — the mirror catches up later);
- ``name``, ``version`` (the trackbridge run id: the progress bar's ``v_num``),
  ``save_dir`` / ``log_dir`` (the run directory).

Only global rank zero records anything. Without ``stack.logger`` the stack
attaches this logger itself (:class:`LoggerAttacher`), as LearningRateMonitor
needs one.
"""

from __future__ import annotations

import logging
import time
from argparse import Namespace
from typing import TYPE_CHECKING, Any, Mapping

import lightning.pytorch as pl
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from ..record.jsonio import to_jsonable
from .guard import tracking_hook
from .session import RunSession

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("trackbridge")

#: How long asking for ``run_id`` / ``experiment`` may wait for the MLflow run to exist.
RUN_ID_WAIT_S = 10.0
_EPOCH_KEY = "epoch"  # added by Lightning's logger connector to its own calls


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay whole values), JSON-safe."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        elif isinstance(value, Namespace):
            flat.update(flatten_params(vars(value), name))
        else:
            flat[name] = to_jsonable(value)
    return flat


class TrackbridgeLogger(Logger):
    """A Lightning Logger over a run's :class:`~trackbridge.callbacks.session.RunSession` (see the module docstring)."""

    def __init__(self, session: RunSession) -> None:
        super().__init__()
        self.session = session
        self._client: Any = None
        self._warned_no_run = False

    def __getstate__(self) -> dict[str, Any]:
        return {"session": self.session}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["session"])  # type: ignore[misc]

    # -- where the run is ------------------------------------------------------------
    @property
    def name(self) -> str:
        return "trackbridge"

    @property
    def version(self) -> str | None:
        return self.session.run_id

    @property
    def save_dir(self) -> str | None:
        run_dir = self.session.run_dir
        return str(run_dir.path) if run_dir is not None else None

    @property
    def log_dir(self) -> str | None:
        return self.save_dir

    @property
    def root_dir(self) -> str | None:
        return self.save_dir

    # -- what Lightning and user code log -----------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        session = self.session
        if _EPOCH_KEY in metrics:
            if not session.in_train_steps:
                return  # Lightning's epoch-end (or evaluation) logging: the epoch record holds it
            points = {k: v for k, v in metrics.items() if k != _EPOCH_KEY}
        else:
            points = dict(metrics)
        # a key with a step curve is left out of the epoch record: in MLflow one key has one step axis
        session.step_keys.update(points)
        writer = session.writer
        if not points or writer is None:
            return
        if step is None:
            step = session.last_step
        else:
            session.last_step = step
        writer.step(int(step), time.time(), points)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self._log_hyperparams(params)

    @tracking_hook
    def _log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        flat = flatten_params(vars(params) if isinstance(params, Namespace) else dict(params))
        if not flat:
            return

        def remember(run: dict[str, Any]) -> None:
            logged = run.get("logged_hyperparameters")
            run["logged_hyperparameters"] = {**(logged if isinstance(logged, dict) else {}), **flat}

        self.session.update_run(remember, wake=False)
        mirror = self.session.mirror
        if mirror is not None:
            mirror.log_params(flat)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, caption: list[str] | str | None = None) -> None:
        """Log images (numpy arrays, CHW/HWC tensors or PIL images) under ``key`` at ``step``."""
        media = self.session.media
        if media is None:
            log.warning("trackbridge: log_image(%r) ignored: this run records no media", key)
            return
        media.log_image(key, images, step=step, caption=caption)

    @rank_zero_only
    def log_figure(self, key: str, figure: Any, step: int | None = None) -> None:
        """Log a matplotlib figure under ``key`` at ``step`` (rendered off the training thread)."""
        media = self.session.media
        if media is None:
            log.warning("trackbridge: log_figure(%r) ignored: this run records no media", key)
            return
        media.log_figure(key, figure, step=step)

    def after_save_checkpoint(self, checkpoint_callback: "ModelCheckpoint") -> None:
        """Lightning saved a checkpoint: the run's checkpoint listeners (the MLflow mirror) pick it up now."""
        for listener in list(self.session.checkpoint_listeners):
            listener(checkpoint_callback)

    def save(self) -> None:
        """Nothing to do: the run's writer thread writes in the background (Lightning calls this every step)."""

    def finalize(self, status: str) -> None:
        """Nothing to do: the run's status is the callbacks' to record."""

    # -- MLflow ------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The MLflow run id; may wait up to :data:`RUN_ID_WAIT_S` for the mirror to create the run."""
        mirror = self.session.mirror
        if mirror is None:
            return None
        run_id = mirror.wait_for_run_id(RUN_ID_WAIT_S)
        if run_id is None and not self._warned_no_run:
            self._warned_no_run = True
            log.warning(
                "trackbridge: MLflow at %s is not reachable yet: logger.run_id is None "
                "(the mirror keeps the run and catches up later)", mirror.tracking_uri,
            )
        return run_id

    @property
    def experiment(self) -> Any:
        """An ``MlflowClient`` for the run's tracking server (MLflow's own defaults), or None with the mirror off."""
        mirror = self.session.mirror
        if mirror is None:
            return None
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=mirror.tracking_uri)
        return self._client


class LoggerAttacher(pl.Callback):
    """Puts the stack's :class:`TrackbridgeLogger` on the Trainer when the user did not pass it."""

    def __init__(self, logger: TrackbridgeLogger) -> None:
        self.logger = logger
        self.session = logger.session

    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.logger not in trainer.loggers:
            trainer.loggers = [*trainer.loggers, self.logger]
