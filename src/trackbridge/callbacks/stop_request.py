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
    check is one ``stat`` per batch. In DDP the ranks agree on the decision at
    every batch, so all of them stop after the same one.
    """

    def __init__(self, request_path: str | os.PathLike[str]) -> None:
        self.request_path = Path(request_path)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # In a DDP run launched as subprocesses each rank built its stack with a
        # generated run id of its own; rank zero's is the run, so every rank
        # watches rank zero's path.
        if trainer.world_size > 1:
            self.request_path = Path(trainer.strategy.broadcast(str(self.request_path), src=0))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        requested = os.path.exists(self.request_path)
        if trainer.world_size > 1:
            # Ranks may see the file at different batches; stopping at different
            # batches would leave one rank waiting in a gradient all-reduce, so
            # they agree on one decision (a one-scalar all-reduce per batch).
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            state_of(trainer).stop_requested = True
            trainer.should_stop = True
