"""What every reference model shares: Adam, one training step and the logging contract."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule


class ReferenceModule(LightningModule):
    """Base of the seven reference models.

    Subclasses call ``self.save_hyperparameters()`` with an ``lr`` argument, define
    :meth:`loss`, and use :meth:`log_val` so every task logs the same way.
    """

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss of ``self(inputs)`` against the batch's training target."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Any, ...], batch_idx: int) -> torch.Tensor:
        # Every task's batch starts (inputs, training target); later fields serve validation only.
        loss = self.loss(self(batch[0]), batch[1])
        self.log_train_loss(loss)
        return loss

    def log_train_loss(self, loss: torch.Tensor) -> None:
        # on_step and on_epoch together give both `train_loss_step` and `train_loss`.
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)

    def log_val(self, name: str, value: Any, **kwargs: Any) -> None:
        """Log an epoch-level validation value.

        sync_dist averages plain tensors over DDP processes; torchmetrics objects sync
        their own states and Lightning ignores the flag for them.
        """
        self.log(name, value, on_step=False, on_epoch=True, sync_dist=True, **kwargs)
