"""Data for the image tasks: generated scenes turned into datasets and a data module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .data import ListDataset, ReferenceDataModule
from .scenes import Scene, SceneKind, render_scenes

# Added to the training seed for validation and test scenes, so the sets are drawn independently.
VAL_SEED_OFFSET = 1_000_003
TEST_SEED_OFFSET = 2_000_003


@dataclass(frozen=True)
class SceneData:
    """How one image task serves generated scenes: which scenes, and as what samples."""

    kind: SceneKind
    name: str  # the data module's ``dataset`` hyperparameter
    to_dataset: Callable[[list[Scene]], Dataset]
    collate_fn: Callable[[list[Any]], Any] | None = None

    def datamodule(
        self,
        *,
        seed: int = 0,
        steps_per_epoch: int | None = None,
        batch_size: int | None = None,
        train_size: int = 512,
        val_size: int = 128,
        test_size: int = 64,
        image_size: int = 32,
    ) -> ReferenceDataModule:
        """Render ``train_size``/``val_size``/``test_size`` scenes and serve them (batch 8 by default)."""
        train = render_scenes(train_size, self.kind, seed=seed, size=image_size)
        val = render_scenes(val_size, self.kind, seed=seed + VAL_SEED_OFFSET, size=image_size)
        test = render_scenes(test_size, self.kind, seed=seed + TEST_SEED_OFFSET, size=image_size)
        return ReferenceDataModule(
            self.to_dataset(train),
            self.to_dataset(val),
            self.to_dataset(test),
            name=self.name,
            batch_size=batch_size or 8,
            val_batch_size=64,
            seed=seed,
            steps_per_epoch=steps_per_epoch,
            collate_fn=self.collate_fn,
        )


def scene_dataset(
    scenes: list[Scene],
    dense: Callable[[Scene], torch.Tensor],
    targets: Callable[[Scene], dict[str, torch.Tensor]],
) -> ListDataset:
    """(image, dense training target, per-image target dict) per scene."""
    return ListDataset([(torch.from_numpy(s.image), dense(s), targets(s)) for s in scenes])


def object_labels(scene: Scene) -> torch.Tensor:
    """Class index of every object in the scene, (N,) long."""
    return torch.tensor([o.label for o in scene.objects], dtype=torch.long)
