"""Semantic segmentation: a tiny fully convolutional net on generated discs and squares.

Classes: 0 background, 1 disc, 2 square. Judged by mean IoU over the classes (``val_mIoU``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.classification import MulticlassJaccardIndex

from .base import ReferenceModule
from .data import ReferenceDataModule
from .nets import dense_fcn
from .scenes import Scene, render_scenes


class ShapeSegmenter(ReferenceModule):
    """Image (3, H, W) -> per-pixel class logits (num_classes, H, W)."""

    def __init__(self, num_classes: int = 3, width: int = 16, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = dense_fcn(3, width, num_classes)
        self.val_miou = MulticlassJaccardIndex(num_classes=num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits, (batch, num_classes, H, W)."""
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = F.cross_entropy(self(images), masks)
        self.log_train_loss(loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, masks = batch
        logits = self(images)
        self.val_miou(logits.argmax(dim=1), masks)
        self.log_val("val_loss", F.cross_entropy(logits, masks))
        self.log_val("val_mIoU", self.val_miou)


def semantic_mask(scene: Scene) -> np.ndarray:
    """(H, W) class map: 0 background, 1 + label for every object's pixels."""
    mask = np.zeros(scene.image.shape[1:], dtype=np.int64)
    for obj in scene.objects:
        mask[obj.mask] = obj.label + 1
    return mask


def segmentation_tensors(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) and class maps (N, H, W) of a list of scenes."""
    images = torch.from_numpy(np.stack([s.image for s in scenes]))
    masks = torch.from_numpy(np.stack([semantic_mask(s) for s in scenes]))
    return images, masks


def build(
    *,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    train_size: int = 512,
    val_size: int = 128,
    image_size: int = 32,
) -> tuple[ShapeSegmenter, ReferenceDataModule]:
    """The segmenter and its generated data (train and val drawn from different seeds)."""
    train = render_scenes(train_size, "shapes", seed=seed, size=image_size)
    val = render_scenes(val_size, "shapes", seed=seed + 1_000_003, size=image_size)
    data = ReferenceDataModule(
        TensorDataset(*segmentation_tensors(train)),
        TensorDataset(*segmentation_tensors(val)),
        name="synthetic_shapes",
        batch_size=batch_size or 8,
        val_batch_size=64,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
    )
    return ShapeSegmenter(num_classes=3), data
