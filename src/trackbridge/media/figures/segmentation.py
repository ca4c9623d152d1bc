"""Semantic segmentation: IoU per class over every validation pixel, and mask overlays."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..accumulators import ConfusionCounts, SampleImages
from ..images import encode_figure
from ..jobs import Rendered
from .base import FigureContext, Renderer, TaskFigures
from .predictions import base_image, render_grid


class SegmentationFigures(TaskFigures):
    """``per_class_iou`` (from torchmetrics' pixel counts; its mean is ``val_mIoU``) and ``predictions``."""

    keys = ("per_class_iou", "predictions")
    expects = "{'images': (B, C, H, W), 'preds': (B, K, H, W) scores or (B, H, W) class ids, 'target': (B, H, W) class ids}"

    def __init__(self, context: FigureContext) -> None:
        super().__init__(context)
        self.counts: ConfusionCounts | None = None
        self.samples = SampleImages(context.samples)

    def update(self, outputs: Any) -> None:
        images, preds, target = self.take(outputs, "images", "preds", "target")
        if self.counts is None:
            self.counts = ConfusionCounts(self.class_count(preds, target))
        self.counts.update(preds, target)
        if not self.samples.full:
            classes = preds.argmax(dim=1) if preds.ndim == target.ndim + 1 else preds
            self.samples.update(images, classes, target)

    def finish(self) -> dict[str, Renderer]:
        if self.counts is None:
            return {}
        return {
            "per_class_iou": partial(render_per_class_iou, self.counts.matrix().numpy(), self.context),
            "predictions": partial(render_masks, self.samples.items, self.context),
        }


def per_class_iou(matrix: np.ndarray) -> list[float | None]:
    """IoU = TP / (TP + FP + FN) per class; None for a class neither present nor predicted.

    torchmetrics' macro Jaccard index averages exactly the classes that are not None.
    """
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]


def render_per_class_iou(matrix: np.ndarray, context: FigureContext) -> Rendered:
    from ..plots import per_class_bar_figure

    labels = context.names(len(matrix))
    iou = per_class_iou(matrix)
    present = [v for v in iou if v is not None]
    mean = float(np.mean(present)) if present else None
    title = f"IoU per class, mean {mean:.4f}" if mean is not None else "IoU per class"
    figure = per_class_bar_figure(iou, labels, "IoU", title)
    data = {"labels": labels, "iou": iou, "mean_iou": mean, "pixels": int(matrix.sum())}
    caption = context.caption(f"{int(matrix.sum())} validation pixels; n/a: class neither present nor predicted")
    return Rendered(encode_figure(figure, context.max_side), caption, data)


def background_class(context: FigureContext) -> int:
    """The class left untinted in overlays: the one named "background", else class 0."""
    lowered = [name.lower() for name in context.class_names]
    return lowered.index("background") if "background" in lowered else 0


def render_masks(samples: list, context: FigureContext) -> Rendered:
    from ..overlays import blend_classes, caption_panel, to_panel, row

    background = background_class(context)
    cells = []
    for image, pred, truth in samples:
        base = base_image(image)
        panels = [
            caption_panel(to_panel(picture)[0], title)
            for title, picture in (
                ("image", base),
                ("ground truth", blend_classes(base, truth.numpy(), background)),
                ("prediction", blend_classes(base, pred.numpy(), background)),
            )
        ]
        cells.append(row(panels))
    shown = {int(k) for _, pred, truth in samples for k in (*pred.unique().tolist(), *truth.unique().tolist())}
    labels = sorted(shown - {background})
    return render_grid(cells, ("image", "ground truth", "prediction"), context, None, scored=False, labels=labels)
