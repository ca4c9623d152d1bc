"""Instance segmentation: a grid of validation images with instance masks and their boxes."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..accumulators import SampleImages
from ..writer import Rendered
from .base import FigureContext, Renderer, TaskFigures
from .predictions import as_lists, base_image, panel_objects, render_grid


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
    from ..overlays import blend_instances, caption_panel, draw_boxes, enlarge, mask_boxes, row

    cells, drawn = [], []
    for image, pred, truth in samples:
        panels, record = [], {}
        for title, name, item in (("ground truth", "target", truth), ("prediction", "preds", pred)):
            objects = panel_objects(item, predicted=item is pred)
            masks = objects["masks"].astype(bool)
            if "boxes" not in objects:  # torchmetrics' segm format has masks only
                objects["boxes"] = mask_boxes(masks)
            panel, scale = enlarge(blend_instances(base_image(image), masks, objects["labels"]))
            draw_boxes(panel, objects["boxes"], objects["labels"], context.class_names, scale=scale,
                       scores=objects.get("scores"))
            panels.append(caption_panel(panel, title))
            record[name] = as_lists(objects)
        cells.append(row(panels))
        drawn.append(record)
    return render_grid(cells, ("ground truth", "prediction"), context, {"samples": drawn}, scored=True)
