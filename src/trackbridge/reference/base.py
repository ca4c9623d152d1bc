"""What every reference model shares: Adam, one training step and the logging contract."""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from lightning.pytorch import LightningModule
from torchmetrics import Metric

Stage = Literal["val", "test"]
STAGES: tuple[Stage, ...] = ("val", "test")


class ReferenceModule(LightningModule):
    """Base of the seven reference models.

    Subclasses call ``self.save_hyperparameters()`` with an ``lr`` argument, define
    :meth:`loss` and :meth:`evaluate`, and log with :meth:`log_eval`, so validation
    (``val_*``) and the held-out test split (``test_*``) log the same way. ``evaluate``
    returns the batch's outputs in torchmetrics' input format for the task, which the
    media recorder draws its figures from (README: "Figures and images").
    """

    # Names of the classes, by class id: the figures label classes with them.
    class_names: tuple[str, ...] = ()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss of ``self(inputs)`` against the batch's training target."""
        raise NotImplementedError

    def evaluate(self, batch: tuple[Any, ...], stage: Stage) -> dict[str, Any]:
        """Log ``<stage>_loss`` and the task's metrics for one batch; return its outputs."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Any, ...], batch_idx: int) -> torch.Tensor:
        # Every task's batch starts (inputs, training target); later fields serve evaluation only.
        loss = self.loss(self(batch[0]), batch[1])
        self.log_train_loss(loss)
        return loss

    def validation_step(self, batch: tuple[Any, ...], batch_idx: int) -> dict[str, Any]:
        return self.evaluate(batch, "val")

    def test_step(self, batch: tuple[Any, ...], batch_idx: int) -> dict[str, Any]:
        return self.evaluate(batch, "test")

    def log_train_loss(self, loss: torch.Tensor) -> None:
        # on_step and on_epoch together give both `train_loss_step` and `train_loss`.
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)

    def add_stage_metrics(self, name: str, make: Callable[[], Metric]) -> None:
        """One metric per stage, as attributes ``val_<name>`` and ``test_<name>``."""
        for stage in STAGES:
            setattr(self, f"{stage}_{name}", make())

    def stage_metric(self, stage: Stage, name: str) -> Metric:
        """The ``name`` metric of ``stage`` (made by :meth:`add_stage_metrics`)."""
        return getattr(self, f"{stage}_{name}")

    def log_eval(self, stage: Stage, name: str, value: Any, **kwargs: Any) -> None:
        """Log an epoch-level evaluation value as ``<stage>_<name>``.

        sync_dist averages plain tensors over DDP processes; torchmetrics objects sync
        their own states and Lightning ignores the flag for them.
        """
        self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, sync_dist=True, **kwargs)
