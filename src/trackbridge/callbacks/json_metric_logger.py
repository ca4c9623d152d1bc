"""JSONMetricLogger: epoch records → metrics.json, rewritten atomically each epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..record.jsonio import read_json, write_json_atomic
from .run_state import epoch_record, mark_epoch_start


class JSONMetricLogger(pl.Callback):
    """Write per-epoch metrics to ``output_path`` as ``{"epochs": [record, ...]}``.

    On a resumed run the records of epochs after the restored checkpoint are
    dropped, so metrics.json keeps exactly one record per epoch.
    """

    def __init__(self, output_path: str | os.PathLike[str]) -> None:
        self.output_path = Path(output_path)
        self.epochs: list[dict[str, Any]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        try:
            previous = read_json(self.output_path).get("epochs", [])
        except FileNotFoundError:
            previous = []
        # trainer.current_epoch is the number of epochs the checkpoint had finished.
        self.epochs = [r for r in previous if r.get("epoch", 0) <= trainer.current_epoch]
        if len(self.epochs) != len(previous) or not self.output_path.exists():
            self._write()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mark_epoch_start(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.epochs.append(epoch_record(trainer))
        self._write()

    def _write(self) -> None:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.output_path, {"epochs": self.epochs})
