"""StopRequestWatcher: turns a stop request (a file in the run directory) into a graceful stop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..record.run_dir import RunDirectory
from .guard import tracking_hook
from .session import RunSession


class StopRequestWatcher(pl.Callback):
    """Stop training after the current batch once ``request_path`` exists.

    Any process may ask (the web API, ``RunDirectory.request_stop``). The file
    is looked for by the run's writer thread every 0.1 s, not on the training
    thread: a batch costs one attribute read. In DDP the ranks agree on the
    decision at every batch, so all of them stop after the same one.
    """

    def __init__(self, request_path: str | os.PathLike[str], *, session: RunSession | None = None) -> None:
        self.request_path = Path(request_path)
        self.session = session or RunSession(RunDirectory.from_file(self.request_path), beats=False)

    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.setup(trainer)
        if self.session.run_dir is not None:
            self.request_path = self.session.run_dir.stop_request

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = self.session.writer
        if writer is not None:
            writer.training = True
            writer.reset_stop_request()
        # a request left from before the start counts at once (the writer's first look is 0.1 s away)
        self.session.stop_requested = self.session.stop_requested or os.path.exists(self.request_path)
        self._check(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Not guarded: the hot path, an attribute read (and in DDP a collective that must not be skipped).
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        requested = self.session.stop_requested
        if trainer.world_size > 1:
            # Ranks may see the file at different batches; stopping at different
            # batches would leave one rank waiting in a gradient all-reduce, so
            # they agree on one decision (a one-scalar all-reduce per batch).
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self.session.stop_requested = True
            trainer.should_stop = True
