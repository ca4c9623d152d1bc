"""Train a reference model with LightningCLI and the whole trackbridge stack.

    python examples/train_cli.py fit --config examples/cli_config.yaml

The run's resolved config.yaml lands in runs/<run-id>/, its values become
MLflow params (``model.lr``, ``trainer.max_epochs``, ...), and config.yaml an
MLflow artifact.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from trackbridge import LightningCLIConfig, TrackingConfig, build_callbacks
from trackbridge.reference import DigitsClassifier, build_reference


class DigitsData(pl.LightningDataModule):
    """The reference classification data (scikit-learn's digits), with its settings on the command line."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        _, self.reference = build_reference("classification", seed=seed, batch_size=batch_size)

    def train_dataloader(self):
        return self.reference.train_dataloader()

    def val_dataloader(self):
        return self.reference.val_dataloader()


class TrackedCLI(LightningCLI):
    """LightningCLI whose Trainer gets trackbridge's callbacks and logger."""

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        stack = build_callbacks(TrackingConfig(task="classification", early_stopping_patience=0))
        return super().instantiate_trainer(callbacks=list(stack), logger=stack.logger, **kwargs)


if __name__ == "__main__":
    TrackedCLI(DigitsClassifier, DigitsData, save_config_callback=LightningCLIConfig)
