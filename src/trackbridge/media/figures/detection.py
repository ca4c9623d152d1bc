"""Object detection (axis-aligned or oriented boxes): precision-recall at IoU 0.5 and a grid
of validation images with their ground-truth and predicted boxes."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..accumulators import DetectionList, SampleImages
from ..images import encode_figure
from ..jobs import Rendered
from .base import FigureContext, Renderer, TaskFigures
from .predictions import render_object_grid

if TYPE_CHECKING:
    from PIL.Image import Image

IOU_THRESHOLD = 0.5


class DetectionFigures(TaskFigures):
    """``pr_curve`` (COCO's matching and 101-point precision at IoU 0.5) and ``predictions``.

    The mean of the per-class APs in ``pr_curve`` is COCO's AP@0.5 (``val_mAP_50`` of the
    reference detectors). Boxes are ``(x1, y1, x2, y2)`` pixels, or for the oriented task
    ``(cx, cy, w, h, theta)`` (drawn as rotated polygons).
    """

    keys = ("pr_curve", "predictions")
    rotated = False
    expects = (
        "{'images': (B, C, H, W), 'preds': [{'boxes': (N, 4) x1 y1 x2 y2, 'scores', 'labels'}, ...], "
        "'target': [{'boxes', 'labels'}, ...]} (one dict per image, as torchmetrics' MeanAveragePrecision)"
    )

    def __init__(self, context: FigureContext) -> None:
        super().__init__(context)
        self.detections = DetectionList()
        self.samples = SampleImages(context.samples)

    def update(self, outputs: Any) -> None:
        images, preds, target = self.take(outputs, "images", "preds", "target")
        self.detections.update(preds, target)
        if not self.samples.full:
            self.samples.update(images, preds, target)

    def finish(self) -> dict[str, Renderer]:
        if not self.detections.images:
            return {}
        return {
            "pr_curve": partial(render_pr_curve, self.detections.images, self.detections.truncated, self.rotated, self.context),
            "predictions": partial(render_detections, self.samples.items, self.rotated, self.context),
        }


class OrientedDetectionFigures(DetectionFigures):
    """:class:`DetectionFigures` for rotated boxes ``(cx, cy, w, h, theta)``."""

    rotated = True
    expects = DetectionFigures.expects.replace("(N, 4) x1 y1 x2 y2", "(N, 5) cx cy w h theta")


def render_pr_curve(images: list, truncated: bool, rotated: bool, context: FigureContext) -> Rendered:
    from ...metrics import RECALL_POINTS, box_iou_matrix, interpolated_precision, rotated_iou_matrix
    from ..plots import pr_curve_figure

    iou_fn = rotated_iou_matrix if rotated else box_iou_matrix
    curves = interpolated_precision(images, iou_fn, (IOU_THRESHOLD,))
    class_ids = sorted(curves)
    labels = [context.name(k) for k in class_ids]
    precision = np.array([curves[k][0] for k in class_ids]).reshape(len(class_ids), len(RECALL_POINTS))
    ap = [float(p.mean()) for p in precision]
    map_50 = float(np.mean(ap)) if ap else None
    shown_map = f"{map_50:.4f}" if map_50 is not None else "n/a (no ground truth)"
    figure = pr_curve_figure(RECALL_POINTS, precision, labels, ap, f"precision-recall at IoU 0.5, mAP@0.5 {shown_map}")
    data = {
        "iou_threshold": IOU_THRESHOLD,
        "labels": labels,
        "class_ids": class_ids,
        "recall": [RECALL_POINTS.tolist() for _ in class_ids],
        "precision": precision.tolist(),
        "ap": ap,
        "map_50": map_50,
        "truncated": truncated,
    }
    caption = context.caption(f"{len(images)} validation images; COCO 101-point interpolated precision")
    return Rendered(encode_figure(figure, context.max_side), caption, data)


def render_detections(samples: list, rotated: bool, context: FigureContext) -> Rendered:
    from ...metrics import rbox_corners
    from ..overlays import draw_boxes, draw_polygons, to_panel

    def draw(image: Image, objects: dict[str, np.ndarray]) -> Image:
        panel, scale = to_panel(image)
        boxes = objects["boxes"].astype(np.float64)
        if rotated:
            draw_polygons(panel, rbox_corners(boxes).reshape(-1, 4, 2), objects["labels"], context.class_names,
                          scale=scale, scores=objects.get("scores"))
        else:
            draw_boxes(panel, boxes, objects["labels"], context.class_names, scale=scale, scores=objects.get("scores"))
        return panel

    return render_object_grid(samples, draw, context)
