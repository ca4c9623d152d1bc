"""Regression: an MLP on scikit-learn's diabetes data, judged by validation mean absolute error."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.regression import MeanAbsoluteError

from .base import ReferenceModule, Stage
from .data import ReferenceDataModule
from .tabular import load_diabetes_split


class DiabetesRegressor(ReferenceModule):
    """Ten features -> disease progression, in the target's own units. Logs ``val_mae`` (monitor).

    The network predicts a standardised target; ``target_mean``/``target_std`` are
    hyperparameters (not data-module state) so a checkpoint alone restores real-unit output.
    """

    def __init__(
        self,
        in_features: int = 10,
        hidden: int = 32,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.add_stage_metrics("mae", MeanAbsoluteError)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in target units, shape (batch,)."""
        return self.net(x).squeeze(-1) * self.hparams.target_std + self.hparams.target_mean

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # MSE on the standardised scale keeps gradients O(1) whatever the target's units.
        return F.mse_loss(pred / self.hparams.target_std, y / self.hparams.target_std)

    def evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: Stage) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = self(x)
        mae = self.stage_metric(stage, "mae")
        mae(pred, y)
        self.log_eval(stage, "loss", self.loss(pred, y))
        self.log_eval(stage, "mae", mae)
        return {"preds": pred, "target": y}


def build(
    *, seed: int = 0, steps_per_epoch: int | None = None, batch_size: int | None = None
) -> tuple[DiabetesRegressor, ReferenceDataModule]:
    """The diabetes regressor and its data (70/20/10 train/val/test split, batch 16 by default)."""
    split = load_diabetes_split(seed)
    data = split.datamodule(
        name="sklearn_diabetes",
        batch_size=batch_size or 16,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
    )
    model = DiabetesRegressor(
        in_features=split.x_train.shape[1],
        target_mean=float(split.y_train.mean()),
        target_std=float(split.y_train.std()),
    )
    return model, data
