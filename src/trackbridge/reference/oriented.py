"""Oriented object detection: rotated rectangles on generated images, judged by rotated mAP.

Boxes are ``(cx, cy, w, h, theta)`` with ``w > h`` and ``theta`` in [0, pi): a rectangle
is unchanged by a half turn, so the angle is regressed as (sin 2θ, cos 2θ), which has no
jump where theta wraps around.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .data import ListDataset, ReferenceDataModule, collate_with_targets
from .grid_detector import STRIDE, GridDetector, centre_cell
from .rotated_map import RotatedMeanAveragePrecision
from .scenes import Scene, render_scenes


class OrientedBoxDetector(GridDetector):
    """Per cell: centre offset (2), log w/h in cells (2), sin 2θ and cos 2θ (2).

    ``forward`` returns the raw grid; :meth:`decode` gives ``boxes`` (N, 5) as
    ``(cx, cy, w, h, theta)`` in pixels/radians, with ``scores`` and ``labels``.
    """

    geometry_channels = 6

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
        self.val_map = RotatedMeanAveragePrecision()

    def geometry_loss(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        centre = F.l1_loss(torch.sigmoid(pred[:, :2]), true[:, :2])
        return centre + F.l1_loss(pred[:, 2:4], true[:, 2:4]) + F.l1_loss(pred[:, 4:6], true[:, 4:6])

    def cell_boxes(self, raw: torch.Tensor) -> torch.Tensor:
        cx, cy = self.cell_centres(raw)
        # The clamp keeps an untrained network's exp() finite.
        w = raw[:, 3].clamp(max=4).exp() * STRIDE
        h = raw[:, 4].clamp(max=4).exp() * STRIDE
        theta = torch.remainder(torch.atan2(raw[:, 5], raw[:, 6]) / 2, math.pi)
        return torch.stack([cx, cy, w, h, theta], dim=-1)


def encode_rotated(scene: Scene, size: int) -> torch.Tensor:
    """Target grid of one scene, (8, size/4, size/4): objectness, geometry, class index."""
    g = size // STRIDE
    grid = torch.zeros(8, g, g)
    for obj in scene.objects:
        cx, cy, w, h, theta = obj.rbox  # type: ignore[misc]
        i, j, off_x, off_y = centre_cell(cx, cy, g)
        grid[:, i, j] = torch.tensor(
            [
                1.0,
                off_x,
                off_y,
                math.log(w / STRIDE),
                math.log(h / STRIDE),
                math.sin(2 * theta),
                math.cos(2 * theta),
                obj.label,
            ]
        )
    return grid


def rotated_dataset(scenes: list[Scene], size: int) -> ListDataset:
    """(image, target grid, {"boxes": (N, 5) cx, cy, w, h, theta, "labels"}) per scene."""
    items = []
    for scene in scenes:
        target = {
            "boxes": torch.tensor([o.rbox for o in scene.objects], dtype=torch.float32).reshape(-1, 5),
            "labels": torch.tensor([o.label for o in scene.objects], dtype=torch.long),
        }
        items.append((torch.from_numpy(scene.image), encode_rotated(scene, size), target))
    return ListDataset(items)


def build(
    *,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    train_size: int = 512,
    val_size: int = 128,
    image_size: int = 32,
) -> tuple[OrientedBoxDetector, ReferenceDataModule]:
    """The oriented detector and its generated data (train and val from different seeds)."""
    train = render_scenes(train_size, "rotated_boxes", seed=seed, size=image_size)
    val = render_scenes(val_size, "rotated_boxes", seed=seed + 1_000_003, size=image_size)
    data = ReferenceDataModule(
        rotated_dataset(train, image_size),
        rotated_dataset(val, image_size),
        name="synthetic_rotated_boxes",
        batch_size=batch_size or 8,
        val_batch_size=64,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        collate_fn=collate_with_targets,
    )
    return OrientedBoxDetector(num_classes=2), data
