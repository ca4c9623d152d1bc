"""LightningCLIConfig: a LightningCLI run's resolved config.yaml → the run directory, MLflow artifact and params.

::

    from lightning.pytorch.cli import LightningCLI
    from trackbridge import LightningCLIConfig, TrackingConfig, build_callbacks

    stack = build_callbacks(TrackingConfig(task="classification"))
    LightningCLI(MyModel, MyData, save_config_callback=LightningCLIConfig,
                 trainer_defaults={"callbacks": list(stack), "logger": stack.logger})

With ``stack.logger`` as the Trainer's logger, Lightning's own
SaveConfigCallback already writes ``config.yaml`` into ``trainer.log_dir``,
the run directory; this subclass also makes sure it lands there otherwise,
and records the config's flattened values as params (``model.init_args.lr``,
``trainer.max_epochs``, ...) in run.json and MLflow, and config.yaml as an
MLflow artifact.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback

from .logger import TrackbridgeLogger, flatten_params
from .session import RunSession

CONFIG_FILE = "config.yaml"


class LightningCLIConfig(SaveConfigCallback):
    """Save the LightningCLI config into the trackbridge run of the Trainer (rank zero only)."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        session = _session_of(trainer)
        if session is None or session.run_dir is None:
            return
        path = session.run_dir.path / CONFIG_FILE
        if not path.exists():
            self.parser.save(self.config, os.fspath(path), skip_none=False, overwrite=True, multifile=False)
        params = flatten_params(self.config.as_dict())
        params.pop("config", None)  # the paths of the files given, not a setting

        def remember(run: dict) -> None:
            logged = run.get("logged_hyperparameters")
            run["logged_hyperparameters"] = {**(logged if isinstance(logged, dict) else {}), **params}
            run["config_file"] = CONFIG_FILE

        session.update_run(remember)
        if session.mirror is not None:
            session.mirror.log_params(params)
            session.mirror.upload(CONFIG_FILE)


def _session_of(trainer: pl.Trainer) -> RunSession | None:
    for logger in trainer.loggers:
        if isinstance(logger, TrackbridgeLogger):
            return logger.session
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        session = getattr(callback, "session", None)
        if isinstance(session, RunSession):
            return session
    return None
