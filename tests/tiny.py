"""A tiny regression LightningModule for tests that need a fault on cue (raise, NaN, sleep)."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class TinyRegressor(pl.LightningModule):
    """Learns y = sum(x); logs train_loss, val_loss and val_mae (the regression monitor)."""

    def __init__(
        self,
        fail_at_step: int | None = None,
        interrupt_at_step: int | None = None,
        nan_metric: bool = False,
        sleep_s: float = 0.0,
        lr: float = 0.05,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at_step is not None and self.global_step >= self.hparams.fail_at_step:
            raise RuntimeError("boom at step %d" % self.global_step)
        if self.hparams.interrupt_at_step is not None and self.global_step >= self.hparams.interrupt_at_step:
            raise KeyboardInterrupt
        if self.hparams.sleep_s:
            time.sleep(self.hparams.sleep_s)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        self.log("val_loss", torch.nn.functional.mse_loss(pred, y))
        self.log("val_mae", (pred - y).abs().mean())
        if self.hparams.nan_metric:
            self.log("val_nan", torch.tensor(float("nan")))
            self.log("val_inf", torch.tensor(float("inf")))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mae", (self(x) - y).abs().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def tiny_loaders(n: int = 64, batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    y = x.sum(1, keepdim=True)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size)


def tiny_trainer(callbacks, max_epochs: int = 3, **kwargs) -> pl.Trainer:
    options = dict(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
        accelerator="cpu",
    )
    options.update(kwargs)
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, **options)
