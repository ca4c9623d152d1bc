"""StopRequestWatcher: turns a stop request (a file in the run directory) into a graceful stop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from .run_state import state_of


class StopRequestWatcher(pl.Callback):
    """Stop training after the current batch once ``request_path`` exists.

    Any process may ask (the web API, ``RunDirectory.request_stop``); the
    check is one ``stat`` per batch. Every rank checks the same path, so a
    DDP run stops on all ranks at the same batch (same host or shared disk).
    """

    def __init__(self, request_path: str | os.PathLike[str]) -> None:
        self.request_path = Path(request_path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if os.path.exists(self.request_path):
            state_of(trainer).stop_requested = True
            trainer.should_stop = True
