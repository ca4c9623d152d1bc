"""Anomaly detection: an autoencoder trained on nine digit classes; the tenth is the anomaly.

The anomaly score is the reconstruction error, so the model never sees a labelled anomaly;
validation measures how well the score ranks the held-out class above the others (AUROC).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import BinaryAUROC

from .base import ReferenceModule, Stage
from .data import ReferenceDataModule
from .tabular import TabularSplit, load_digits_split


class DigitsAutoencoder(ReferenceModule):
    """64 pixels -> ``code`` numbers -> 64 pixels. Logs ``val_auroc`` (monitor)."""

    class_names = ("normal", "anomaly")

    def __init__(
        self, in_features: int = 64, hidden: int = 32, code: int = 8, lr: float = 3e-3
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, code)
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, in_features)
        )
        self.add_stage_metrics("auroc", BinaryAUROC)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly score per sample (mean squared reconstruction error), shape (batch,)."""
        return self.reconstruction_error(x)

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        recon = torch.sigmoid(self.decoder(self.encoder(x)))  # pixels live in [0, 1]
        return (recon - x).pow(2).mean(dim=1)

    def loss(self, score: torch.Tensor, _label: torch.Tensor) -> torch.Tensor:
        # Mean reconstruction error; labels are unused (the training set holds normal samples only).
        return score.mean()

    def evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: Stage) -> dict[str, torch.Tensor]:
        x, is_anomaly = batch
        score = self(x)
        auroc = self.stage_metric(stage, "auroc")
        auroc(score, is_anomaly)
        # The loss over normal and anomalous samples alike: it still tracks reconstruction.
        self.log_eval(stage, "loss", self.loss(score, is_anomaly))
        self.log_eval(stage, "auroc", auroc)
        return {"preds": score, "target": is_anomaly}


def build(
    *,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    anomaly_class: int = 7,
) -> tuple[DigitsAutoencoder, ReferenceDataModule]:
    """The autoencoder and its data: train on normal digits, validate and test on all (label 1 = anomaly)."""
    split = load_digits_split(seed)
    normal = split.y_train != anomaly_class
    # Label 0 for every training sample: only normal digits are trained on.
    normal_labels = torch.zeros(int(normal.sum()), dtype=torch.long)
    served = TabularSplit(
        split.x_train[normal],
        normal_labels,
        split.x_val,
        (split.y_val == anomaly_class).long(),
        split.x_test,
        (split.y_test == anomaly_class).long(),
    )
    data = served.datamodule(
        name=f"sklearn_digits_anomaly_{anomaly_class}",
        batch_size=batch_size or 32,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
    )
    return DigitsAutoencoder(in_features=split.x_train.shape[1]), data
