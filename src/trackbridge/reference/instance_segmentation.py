"""Instance segmentation: semantic segmentation split into instances by connected components.

Generated objects never touch, so each connected region of predicted foreground is one
instance; its class is the region's majority class and its score the mean probability of
that class over the region. Judged by COCO mask mAP as ``val_mAP_mask``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .coco_map import CocoMeanAveragePrecision
from .data import ListDataset, ReferenceDataModule, collate_with_targets
from .mean_ap_module import MeanAPModule
from .nets import dense_fcn
from .scene_data import SceneData, object_labels, scene_dataset
from .scenes import Scene
from .segmentation import semantic_mask


class InstanceSegmenter(MeanAPModule):
    """Image -> per-pixel logits (background + classes); :meth:`decode` yields instance masks."""

    map_name = "mAP_mask"
    class_names = ("disc", "square")

    def __init__(
        self, num_classes: int = 2, width: int = 16, lr: float = 1e-2, min_pixels: int = 4
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = dense_fcn(3, width, num_classes + 1)
        self.add_stage_metrics("map", lambda: CocoMeanAveragePrecision("segm"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits, (batch, 1 + num_classes, H, W); channel 0 is background."""
        return self.net(x)

    def loss(self, logits: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, semantic)

    @torch.no_grad()
    def decode(self, logits: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image: ``masks`` (N, H, W) bool, ``scores`` and ``labels`` (0-based object classes)."""
        from scipy import ndimage  # only needed at validation time

        probs = logits.softmax(dim=1).cpu()
        pixel_class = probs.argmax(dim=1)
        out = []
        for prob, classes in zip(probs, pixel_class):
            regions, count = ndimage.label((classes > 0).numpy())
            masks, scores, labels = [], [], []
            for region in range(1, count + 1):
                mask = torch.from_numpy(regions == region)
                if int(mask.sum()) < self.hparams.min_pixels:
                    continue  # specks of an untrained net would flood the evaluation
                label = int(classes[mask].bincount(minlength=prob.shape[0])[1:].argmax()) + 1
                masks.append(mask)
                scores.append(prob[label][mask].mean())
                labels.append(label - 1)
            h, w = classes.shape
            out.append(
                {
                    "masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool),
                    "scores": torch.stack(scores) if scores else torch.zeros(0),
                    "labels": torch.tensor(labels, dtype=torch.long),
                }
            )
        return out


def instance_targets(scene: Scene) -> dict[str, torch.Tensor]:
    """``masks`` (N, H, W) bool and ``labels`` of one scene."""
    masks = np.zeros((0, *scene.image.shape[1:]), bool)
    if scene.objects:
        masks = np.stack([o.mask for o in scene.objects])
    return {"masks": torch.from_numpy(masks), "labels": object_labels(scene)}


def instance_dataset(scenes: list[Scene]) -> ListDataset:
    """(image, semantic class map, {"masks": (N, H, W) bool, "labels"}) per scene."""
    return scene_dataset(scenes, lambda s: torch.from_numpy(semantic_mask(s)), instance_targets)


INSTANCE_DATA = SceneData(
    "shapes", "synthetic_shape_instances", instance_dataset, collate_with_targets
)


def build(**options: Any) -> tuple[InstanceSegmenter, ReferenceDataModule]:
    """The instance segmenter and its data (``options``: :meth:`.SceneData.datamodule`)."""
    data = INSTANCE_DATA.datamodule(**options)
    return InstanceSegmenter(num_classes=2), data
