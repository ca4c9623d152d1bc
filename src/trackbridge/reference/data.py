"""One DataModule for every reference task: fixed train/val/test splits served by seeded loaders."""

from __future__ import annotations

from typing import Any, Callable

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler


class ReferenceDataModule(LightningDataModule):
    """Serve in-memory ``train``/``val``/``test`` datasets with deterministic, single-process loaders.

    ``steps_per_epoch`` asks for exactly that many training batches per epoch (per process
    when running distributed) by sampling the training set with replacement; otherwise an
    epoch is one shuffled pass over it.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        test: Dataset | None = None,
        *,
        name: str,
        batch_size: int,
        seed: int = 0,
        steps_per_epoch: int | None = None,
        val_batch_size: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.train_set = train
        self.val_set = val
        self.test_set = test
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.collate_fn = collate_fn
        # Only plain values, so a logger can record them next to the model's hyperparameters;
        # the keys are disjoint from the modules' so Lightning's merge never conflicts.
        self.save_hyperparameters(
            {
                "dataset": name,
                "batch_size": batch_size,
                "seed": seed,
                "steps_per_epoch": steps_per_epoch,
                "train_size": len(train),  # type: ignore[arg-type]
                "val_size": len(val),  # type: ignore[arg-type]
                "test_size": len(test) if test is not None else 0,  # type: ignore[arg-type]
            }
        )

    def train_dataloader(self) -> DataLoader:
        # A generator owned by the loader keeps shuffling reproducible without touching
        # the global RNG (which two DDP processes would otherwise share by accident).
        generator = torch.Generator().manual_seed(self.seed)
        if self.steps_per_epoch is None:
            return DataLoader(
                self.train_set,
                batch_size=self.batch_size,
                shuffle=True,
                generator=generator,
                num_workers=0,
                collate_fn=self.collate_fn,
            )
        sampler = RandomSampler(
            self.train_set,  # type: ignore[arg-type]
            replacement=True,
            num_samples=self.steps_per_epoch * self.batch_size,
            generator=generator,
        )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=0,
            collate_fn=self.collate_fn,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError("this data module has no test split (pass `test=` to ReferenceDataModule)")
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        # Not shuffled: the same samples come first every epoch (the figures' fixed sample).
        return DataLoader(
            dataset,
            batch_size=self.val_batch_size,
            shuffle=False,
            num_workers=0,
            collate_fn=self.collate_fn,
        )


class ListDataset(Dataset):
    """A dataset over a list of ready-made samples (rendered scenes, tuples of tensors)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def collate_with_targets(batch: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Stack every tensor field of the samples, but keep the last (per-image target dicts) a list.

    Detection targets have a different number of objects per image, so they cannot be stacked.
    """
    *dense, targets = zip(*batch)
    return (*(torch.stack(list(field)) for field in dense), list(targets))


def split_indices(
    n: int, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded permutation of ``range(n)`` cut into (train, val, test); val and test sizes even.

    An even size lets two DDP processes split it without the sampler padding duplicates.
    The test part is cut from what would otherwise be training data, so adding it leaves
    the validation set as it was.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(2, int(round(n * val_fraction / 2)) * 2)
    n_test = int(round(n * test_fraction / 2)) * 2
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]
