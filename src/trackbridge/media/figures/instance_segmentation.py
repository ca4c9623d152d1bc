"""Instance segmentation: a grid of validation images with instance masks and their boxes."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..accumulators import SampleImages
from ..jobs import Rendered
from .base import FigureContext, Renderer, TaskFigures
from .predictions import render_object_grid

if TYPE_CHECKING:
    from PIL.Image import Image


class InstanceSegmentationFigures(TaskFigures):
    """``predictions``: ground-truth and predicted instance masks, each with its box and class."""

    keys = ("predictions",)
    expects = (
        "{'images': (B, C, H, W), 'preds': [{'masks': (N, H, W) bool, 'scores', 'labels'}, ...], "
        "'target': [{'masks', 'labels'}, ...]} (one dict per image, as torchmetrics' MeanAveragePrecision)"
    )

    def __init__(self, context: FigureContext) -> None:
        super().__init__(context)
        self.samples = SampleImages(context.samples)

    def update(self, outputs: Any) -> None:
        images, preds, target = self.take(outputs, "images", "preds", "target")
        if not self.samples.full:
            self.samples.update(images, preds, target)

    def finish(self) -> dict[str, Renderer]:
        if not self.samples.items:
            return {}
        return {"predictions": partial(render_instances, self.samples.items, self.context)}


def render_instances(samples: list, context: FigureContext) -> Rendered:
    from ..overlays import blend_instances, draw_boxes, to_panel, mask_boxes

    def draw(image: Image, objects: dict[str, np.ndarray]) -> Image:
        masks = objects["masks"].astype(bool)
        if "boxes" not in objects:  # torchmetrics' segm format has masks only
            objects["boxes"] = mask_boxes(masks)
        panel, scale = to_panel(blend_instances(image, masks, objects["labels"]))
        draw_boxes(panel, objects["boxes"], objects["labels"], context.class_names, scale=scale,
                   scores=objects.get("scores"))
        return panel

    return render_object_grid(samples, draw, context)
