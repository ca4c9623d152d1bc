"""Per-step metrics (``self.log(..., on_step=True)``) → steps.jsonl, at Lightning's logging cadence.

Lightning hands step metrics to its loggers every ``log_every_n_steps``; a
small Logger is the one public place that sees exactly those points, so the
stack attaches one (it also satisfies LearningRateMonitor, which refuses a
Trainer without a logger).
"""

from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from ..record.clock import utc_now_iso
from ..record.epoch import STEP_SUFFIX
from ..record.jsonio import append_jsonl, read_jsonl, to_jsonable

StepListener = Callable[[dict[str, Any]], None]


class StepMetricsLogger(Logger):
    """A Lightning Logger that appends ``*_step`` metrics to steps.jsonl.

    Each line is ``{"step": <global step>, "time": <UTC>, "<name>_step": value, ...}``.
    ``listeners`` (the MLflow mirror) get each line after it is written.
    """

    def __init__(self, steps_path: str | os.PathLike[str], run_id: str | None = None) -> None:
        super().__init__()
        self.steps_path = Path(steps_path)
        self._run_id = run_id or self.steps_path.parent.name
        self.listeners: list[StepListener] = []
        self.hyperparameters: dict[str, Any] = {}
        self._last_step = -1  # steps are monotonic: a line only past the last one recorded

    @property
    def name(self) -> str:
        return "trackbridge"

    @property
    def version(self) -> str:
        return self._run_id

    @property
    def save_dir(self) -> str:
        return str(self.steps_path.parent)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.hyperparameters = dict(to_jsonable(vars(params) if isinstance(params, Namespace) else params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        points = {k: v for k, v in metrics.items() if k.endswith(STEP_SUFFIX)}
        if not points or step is None or int(step) <= self._last_step:
            return
        self._last_step = int(step)
        line = {"step": int(step), "time": utc_now_iso(), **to_jsonable(points)}
        # flush, no fsync: a step point lost to a power cut is not worth a disk sync per step
        append_jsonl(self.steps_path, line, fsync=False)
        for listener in self.listeners:
            listener(line)

    def continue_after_recorded(self) -> None:
        """A resumed run records only steps past the last one steps.jsonl holds (DESIGN §6)."""
        steps = [line.get("step", -1) for line in read_jsonl(self.steps_path) if isinstance(line, dict)]
        self._last_step = max(steps, default=-1)


class StepMetricsRecorder(pl.Callback):
    """Attaches a :class:`StepMetricsLogger` to the Trainer for the run's steps.jsonl."""

    def __init__(self, steps_path: str | os.PathLike[str], run_id: str | None = None) -> None:
        self.logger = StepMetricsLogger(steps_path, run_id)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.logger not in trainer.loggers:
            trainer.loggers = [*trainer.loggers, self.logger]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.logger.continue_after_recorded()
