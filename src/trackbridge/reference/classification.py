"""Classification: an MLP on scikit-learn's 8x8 digits, judged by validation accuracy."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from .base import ReferenceModule, Stage
from .data import ReferenceDataModule
from .tabular import load_digits_split


class DigitsClassifier(ReferenceModule):
    """64 pixel features -> class logits. Logs ``val_accuracy`` (monitor) and ``val_f1`` (and ``test_*``)."""

    def __init__(
        self, in_features: int = 64, num_classes: int = 10, hidden: int = 32, lr: float = 3e-3
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        # Macro averages, so a class the model ignores shows up in the score.
        self.add_stage_metrics("accuracy", lambda: MulticlassAccuracy(num_classes=num_classes, average="macro"))
        self.add_stage_metrics("f1", lambda: MulticlassF1Score(num_classes=num_classes, average="macro"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (batch, num_classes)."""
        return self.net(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: Stage) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        self.log_eval(stage, "loss", self.loss(logits, y))
        for name in ("accuracy", "f1"):
            metric = self.stage_metric(stage, name)
            metric(logits, y)
            self.log_eval(stage, name, metric)
        return {"preds": logits, "target": y}


def build(
    *, seed: int = 0, steps_per_epoch: int | None = None, batch_size: int | None = None
) -> tuple[DigitsClassifier, ReferenceDataModule]:
    """The digits classifier and its data (70/20/10 train/val/test split, batch 64 by default)."""
    split = load_digits_split(seed)
    data = split.datamodule(
        name="sklearn_digits",
        batch_size=batch_size or 64,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
    )
    return DigitsClassifier(in_features=split.x_train.shape[1]), data
