"""Object detection: axis-aligned boxes on generated images, judged by COCO mAP as ``val_mAP``."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from .coco_map import CocoMeanAveragePrecision
from .data import ListDataset, ReferenceDataModule, collate_with_targets
from .grid_detector import GridDetector, encode_grid
from .scene_data import SceneData, object_labels, scene_dataset
from .scenes import Scene


class BoxDetector(GridDetector):
    """Per cell: centre offset (2) and log width/height in cells (2). Boxes are xyxy pixels.

    ``forward`` returns the raw grid; :meth:`decode` turns it into boxes, scores and labels.
    """

    geometry_channels = 4
    class_names = ("red", "green")

    def make_map(self) -> Metric:
        return CocoMeanAveragePrecision("bbox")

    def cell_boxes(self, raw: torch.Tensor) -> torch.Tensor:
        cx, cy, w, h = self.cell_centre_size(raw)
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def encode_boxes(scene: Scene) -> torch.Tensor:
    """Target grid of one scene, (6, size/4, size/4): objectness, geometry, class index."""
    objects = [(_centre_size(o.box), o.label) for o in scene.objects]
    return encode_grid(objects, scene.size, BoxDetector.geometry_channels)


def _centre_size(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def box_targets(scene: Scene) -> dict[str, torch.Tensor]:
    """``boxes`` (N, 4) xyxy in pixels and ``labels`` of one scene."""
    boxes = torch.tensor([o.box for o in scene.objects], dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": object_labels(scene)}


def box_dataset(scenes: list[Scene]) -> ListDataset:
    """(image, target grid, {"boxes": (N, 4) xyxy, "labels"}) per scene."""
    return scene_dataset(scenes, encode_boxes, box_targets)


BOX_DATA = SceneData("boxes", "synthetic_boxes", box_dataset, collate_with_targets)


def build(**options: Any) -> tuple[BoxDetector, ReferenceDataModule]:
    """The detector and its generated data (``options``: :meth:`.SceneData.datamodule`)."""
    data = BOX_DATA.datamodule(**options)
    return BoxDetector(num_classes=2), data
