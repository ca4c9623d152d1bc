"""The two small data sets that scikit-learn ships inside its package: digits and diabetes.

Nothing is downloaded; scikit-learn is imported only when a data set is actually built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from .data import ReferenceDataModule, split_indices


@dataclass(frozen=True)
class TabularSplit:
    """Features and targets of a seeded train/val/test split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def datamodule(
        self, *, name: str, batch_size: int, seed: int, steps_per_epoch: int | None
    ) -> ReferenceDataModule:
        """Serve the split as (features, target) batches, validation and test 512 at a time."""
        return ReferenceDataModule(
            TensorDataset(self.x_train, self.y_train),
            TensorDataset(self.x_val, self.y_val),
            TensorDataset(self.x_test, self.y_test),
            name=name,
            batch_size=batch_size,
            val_batch_size=512,
            seed=seed,
            steps_per_epoch=steps_per_epoch,
        )


def load_digits_split(seed: int, val_fraction: float = 0.2, test_fraction: float = 0.1) -> TabularSplit:
    """8x8 digit images as 64 features scaled to [0, 1]; labels 0-9 (1,797 samples)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    train, val, test = split_indices(len(y), val_fraction, seed, test_fraction)
    return TabularSplit(x[train], y[train], x[val], y[val], x[test], y[test])


def load_diabetes_split(seed: int, val_fraction: float = 0.2, test_fraction: float = 0.1) -> TabularSplit:
    """Ten standardised features; target is disease progression, in its own units (442 samples).

    Features are standardised with the training part's statistics only, so nothing leaks
    from validation.
    """
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.float32)
    train, val, test = split_indices(len(y), val_fraction, seed, test_fraction)
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    return TabularSplit(x[train], y[train], x[val], y[val], x[test], y[test])
