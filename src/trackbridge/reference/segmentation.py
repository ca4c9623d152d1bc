"""Semantic segmentation: a tiny fully convolutional net on generated discs and squares.

Classes: 0 background, 1 disc, 2 square. Judged by mean IoU over the classes (``val_mIoU``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.classification import MulticlassJaccardIndex

from .base import ReferenceModule, Stage
from .data import ReferenceDataModule
from .nets import dense_fcn
from .scene_data import SceneData
from .scenes import Scene


class ShapeSegmenter(ReferenceModule):
    """Image (3, H, W) -> per-pixel class logits (num_classes, H, W)."""

    class_names = ("background", "disc", "square")

    def __init__(self, num_classes: int = 3, width: int = 16, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = dense_fcn(3, width, num_classes)
        self.add_stage_metrics("miou", lambda: MulticlassJaccardIndex(num_classes=num_classes, average="macro"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits, (batch, num_classes, H, W)."""
        return self.net(x)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, masks)

    def evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: Stage) -> dict[str, torch.Tensor]:
        images, masks = batch
        logits = self(images)
        classes = logits.argmax(dim=1)
        miou = self.stage_metric(stage, "miou")
        miou(classes, masks)
        self.log_eval(stage, "loss", self.loss(logits, masks))
        self.log_eval(stage, "mIoU", miou)
        return {"images": images, "preds": classes, "target": masks}


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


def segmentation_dataset(scenes: list[Scene]) -> TensorDataset:
    """(image, class map) per scene."""
    return TensorDataset(*segmentation_tensors(scenes))


SHAPE_DATA = SceneData("shapes", "synthetic_shapes", segmentation_dataset)


def build(**options: Any) -> tuple[ShapeSegmenter, ReferenceDataModule]:
    """The segmenter and its generated data (``options``: :meth:`.SceneData.datamodule`)."""
    data = SHAPE_DATA.datamodule(**options)
    return ShapeSegmenter(num_classes=3), data
