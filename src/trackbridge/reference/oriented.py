"""Oriented object detection: rotated rectangles on generated images, judged by rotated mAP.

Boxes are ``(cx, cy, w, h, theta)`` with ``w > h`` and ``theta`` in [0, pi): a rectangle
is unchanged by a half turn, so the angle is regressed as (sin 2θ, cos 2θ), which has no
jump where theta wraps around.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics import Metric

from .data import ListDataset, ReferenceDataModule, collate_with_targets
from .grid_detector import GridDetector, encode_grid
from .rotated_map import RotatedMeanAveragePrecision
from .scene_data import SceneData, object_labels, scene_dataset
from .scenes import Scene, SceneObject


class OrientedBoxDetector(GridDetector):
    """Per cell: centre offset (2), log w/h in cells (2), sin 2θ and cos 2θ (2).

    ``forward`` returns the raw grid; :meth:`decode` gives ``boxes`` (N, 5) as
    ``(cx, cy, w, h, theta)`` in pixels/radians, with ``scores`` and ``labels``.
    """

    geometry_channels = 6
    class_names = ("red", "green")

    def make_map(self) -> Metric:
        return RotatedMeanAveragePrecision()

    def geometry_loss(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return super().geometry_loss(pred, true) + F.l1_loss(pred[:, 4:6], true[:, 4:6])

    def cell_boxes(self, raw: torch.Tensor) -> torch.Tensor:
        cx, cy, w, h = self.cell_centre_size(raw)
        theta = torch.remainder(torch.atan2(raw[:, 5], raw[:, 6]) / 2, math.pi)
        return torch.stack([cx, cy, w, h, theta], dim=-1)


def encode_rotated(scene: Scene) -> torch.Tensor:
    """Target grid of one scene, (8, size/4, size/4): objectness, geometry, class index."""
    objects = [(_double_angle_geometry(o), o.label) for o in scene.objects]
    return encode_grid(objects, scene.size, OrientedBoxDetector.geometry_channels)


def _double_angle_geometry(obj: SceneObject) -> tuple[float, ...]:
    """(cx, cy, w, h, sin 2θ, cos 2θ) of an object of a "rotated_boxes" scene (it has an rbox)."""
    cx, cy, w, h, theta = obj.rbox  # type: ignore[misc]
    return cx, cy, w, h, math.sin(2 * theta), math.cos(2 * theta)


def rotated_targets(scene: Scene) -> dict[str, torch.Tensor]:
    """``boxes`` (N, 5) as (cx, cy, w, h, theta) and ``labels`` of one scene."""
    boxes = torch.tensor([o.rbox for o in scene.objects], dtype=torch.float32).reshape(-1, 5)
    return {"boxes": boxes, "labels": object_labels(scene)}


def rotated_dataset(scenes: list[Scene]) -> ListDataset:
    """(image, target grid, {"boxes": (N, 5) cx, cy, w, h, theta, "labels"}) per scene."""
    return scene_dataset(scenes, encode_rotated, rotated_targets)


ROTATED_DATA = SceneData(
    "rotated_boxes", "synthetic_rotated_boxes", rotated_dataset, collate_with_targets
)


def build(**options: Any) -> tuple[OrientedBoxDetector, ReferenceDataModule]:
    """The oriented detector and its data (``options``: :meth:`.SceneData.datamodule`)."""
    data = ROTATED_DATA.datamodule(**options)
    return OrientedBoxDetector(num_classes=2), data
