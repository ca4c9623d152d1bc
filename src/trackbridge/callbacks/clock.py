"""RunClock: drives the session's clocks from the training loop's own hooks.

The epoch clock (``duration_s``), the input-pipeline clock (time waiting for
batches vs time in the step, samples per second: ``time/data_wait_s``,
``time/step_s``, ``throughput/samples_per_s`` in every epoch record), and
which phase Lightning's ``log_metrics`` calls belong to (a training step, an
epoch end, a validate/test stage). Two ``perf_counter`` reads per batch.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from .guard import tracking_hook
from .session import RunSession


class RunClock(pl.Callback):
    """The stack's first callback: ``session`` learns where the loop is."""

    def __init__(self, session: RunSession) -> None:
        self.session = session

    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.setup(trainer)

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.epoch_started(trainer)

    @tracking_hook
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.session.batch_started(batch)

    @tracking_hook
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.session.batch_ended()

    @tracking_hook
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.session.in_train_steps = False  # the validation inside an epoch: its logging is not a step's
        else:
            self.session.stage_started()

    @tracking_hook
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.stage_started()
