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

    Steps are monotonic (DESIGN §6): a resumed run keeps every record it has
    and appends only epochs past the last one recorded, so metrics.json keeps
    exactly one record per epoch and never rewrites history MLflow holds.
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
        self.epochs = list(previous)
        if not self.output_path.exists():
            self._write()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mark_epoch_start(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = epoch_record(trainer)
        if self.epochs and record["epoch"] <= self.epochs[-1].get("epoch", 0):
            return  # re-run after a resume from an older checkpoint: the first record stays
        self.epochs.append(record)
        self._write()

    def _write(self) -> None:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.output_path, {"epochs": self.epochs})
