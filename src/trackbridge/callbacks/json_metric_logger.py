"""JSONMetricLogger: epoch records → metrics.json, rewritten atomically by the run's writer thread."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl

from .guard import tracking_hook
from .session import END_FLUSH_S, RunSession, StageHooks


class JSONMetricLogger(StageHooks):
    """Write per-epoch metrics to ``output_path`` as ``{"epochs": [record, ...], "stages": [...]}``.

    History is never rewritten (DESIGN §6): a resumed run keeps the records
    it had and adds only epochs past the last one recorded. A validate or test
    stage after fit adds ``{"stage", "epoch", "metrics", "time"}`` to
    ``stages``. ``session``: the stack's (made here when None).
    """

    def __init__(self, output_path: str | os.PathLike[str], *, session: RunSession | None = None) -> None:
        self.output_path = Path(output_path)
        self.session = session or RunSession(None, metrics_path=self.output_path)

    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.setup(trainer)
        if self.session.metrics_path is not None:
            self.output_path = self.session.metrics_path

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = self.session.writer
        if writer is not None and not self.output_path.exists():
            writer.write_metrics()  # readers find an empty history from the start

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.epoch_started(trainer)

    @tracking_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = self.session.writer
        record = self.session.epoch_record(trainer)
        if writer is not None and record is not None:
            writer.epoch(record)

    def record_stage(self, trainer: pl.Trainer, stage: str) -> None:
        writer = self.session.writer
        if writer is not None:
            writer.stage(self.session.stage_record(trainer, stage))

    @tracking_hook
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.flush(END_FLUSH_S)

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.flush(END_FLUSH_S)
