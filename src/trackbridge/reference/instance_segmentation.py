"""Instance segmentation: semantic segmentation split into instances by connected components.

Generated objects never touch, so each connected region of predicted foreground is one
instance; its class is the region's majority class and its score the mean probability of
that class over the region. Judged by COCO mask mAP as ``val_mAP_mask``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .base import ReferenceModule
from .coco_map import CocoMeanAveragePrecision
from .data import ListDataset, ReferenceDataModule, collate_with_targets
from .nets import dense_fcn
from .scenes import Scene, render_scenes
from .segmentation import semantic_mask


class InstanceSegmenter(ReferenceModule):
    """Image -> per-pixel logits (background + classes); :meth:`decode` yields instance masks."""

    def __init__(
        self, num_classes: int = 2, width: int = 16, lr: float = 1e-2, min_pixels: int = 4
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = dense_fcn(3, width, num_classes + 1)
        self.val_map = CocoMeanAveragePrecision("segm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits, (batch, 1 + num_classes, H, W); channel 0 is background."""
        return self.net(x)

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

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, semantic, _ = batch
        loss = F.cross_entropy(self(images), semantic)
        self.log_train_loss(loss)
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        images, semantic, targets = batch
        logits = self(images)
        self.log_val("val_loss", F.cross_entropy(logits, semantic))
        self.val_map.update(self.decode(logits), targets)

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every process's images first, so all ranks log the same value.
        result = self.val_map.compute()
        self.val_map.reset()
        self.log_val("val_mAP_mask", result["map"])
        self.log_val("val_mAP_mask_50", result["map_50"])


def instance_dataset(scenes: list[Scene]) -> Dataset:
    """(image, semantic class map, {"masks": (N, H, W) bool, "labels"}) per scene."""
    items = []
    for scene in scenes:
        h, w = scene.image.shape[1:]
        masks = np.zeros((0, h, w), bool)
        if scene.objects:
            masks = np.stack([o.mask for o in scene.objects])
        target = {
            "masks": torch.from_numpy(masks),
            "labels": torch.tensor([o.label for o in scene.objects], dtype=torch.long),
        }
        items.append((torch.from_numpy(scene.image), torch.from_numpy(semantic_mask(scene)), target))
    return ListDataset(items)


def build(
    *,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    train_size: int = 512,
    val_size: int = 128,
    image_size: int = 32,
) -> tuple[InstanceSegmenter, ReferenceDataModule]:
    """The instance segmenter and its generated data (train and val from different seeds)."""
    train = render_scenes(train_size, "shapes", seed=seed, size=image_size)
    val = render_scenes(val_size, "shapes", seed=seed + 1_000_003, size=image_size)
    data = ReferenceDataModule(
        instance_dataset(train),
        instance_dataset(val),
        name="synthetic_shape_instances",
        batch_size=batch_size or 8,
        val_batch_size=64,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        collate_fn=collate_with_targets,
    )
    return InstanceSegmenter(num_classes=2), data
