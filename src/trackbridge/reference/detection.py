"""Object detection: axis-aligned boxes on generated images, judged by COCO mAP as ``val_mAP``."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .coco_map import CocoMeanAveragePrecision
from .data import ListDataset, ReferenceDataModule, collate_with_targets
from .grid_detector import STRIDE, GridDetector, centre_cell
from .scenes import Scene, render_scenes


class BoxDetector(GridDetector):
    """Per cell: centre offset (2) and log width/height in cells (2). Boxes are xyxy pixels.

    ``forward`` returns the raw grid; :meth:`decode` turns it into boxes, scores and labels.
    """

    geometry_channels = 4

    def __init__(
        self,
        num_classes: int = 2,
        width: int = 32,
        lr: float = 3e-3,
        pos_weight: float = 4.0,
        max_detections: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._build_network(num_classes, width)
        self.val_map = CocoMeanAveragePrecision("bbox")

    def geometry_loss(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(torch.sigmoid(pred[:, :2]), true[:, :2]) + F.l1_loss(pred[:, 2:], true[:, 2:])

    def cell_boxes(self, raw: torch.Tensor) -> torch.Tensor:
        cx, cy = self.cell_centres(raw)
        # The clamp keeps an untrained network's exp() finite.
        w = raw[:, 3].clamp(max=4).exp() * STRIDE
        h = raw[:, 4].clamp(max=4).exp() * STRIDE
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def encode_boxes(scene: Scene, size: int) -> torch.Tensor:
    """Target grid of one scene, (6, size/4, size/4): objectness, geometry, class index."""
    g = size // STRIDE
    grid = torch.zeros(6, g, g)
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.box
        i, j, off_x, off_y = centre_cell((x1 + x2) / 2, (y1 + y2) / 2, g)
        log_w, log_h = math.log((x2 - x1) / STRIDE), math.log((y2 - y1) / STRIDE)
        grid[:, i, j] = torch.tensor([1.0, off_x, off_y, log_w, log_h, obj.label])
    return grid


def box_dataset(scenes: list[Scene], size: int) -> ListDataset:
    """(image, target grid, {"boxes": (N, 4) xyxy, "labels"}) per scene."""
    items = []
    for scene in scenes:
        target = {
            "boxes": torch.tensor([o.box for o in scene.objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([o.label for o in scene.objects], dtype=torch.long),
        }
        items.append((torch.from_numpy(scene.image), encode_boxes(scene, size), target))
    return ListDataset(items)


def build(
    *,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    train_size: int = 512,
    val_size: int = 128,
    image_size: int = 32,
) -> tuple[BoxDetector, ReferenceDataModule]:
    """The detector and its generated data (train and val drawn from different seeds)."""
    train = render_scenes(train_size, "boxes", seed=seed, size=image_size)
    val = render_scenes(val_size, "boxes", seed=seed + 1_000_003, size=image_size)
    data = ReferenceDataModule(
        box_dataset(train, image_size),
        box_dataset(val, image_size),
        name="synthetic_boxes",
        batch_size=batch_size or 8,
        val_batch_size=64,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        collate_fn=collate_with_targets,
    )
    return BoxDetector(num_classes=2), data
