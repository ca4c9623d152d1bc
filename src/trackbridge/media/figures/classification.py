"""Classification: the confusion matrix of the whole validation set (rows = true class)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..accumulators import ConfusionCounts
from ..images import encode_figure
from ..jobs import Rendered
from .base import FigureContext, Renderer, TaskFigures


class ClassificationFigures(TaskFigures):
    """``confusion_matrix`` from torchmetrics' multiclass counts; its macro recall is ``val_accuracy``."""

    keys = ("confusion_matrix",)
    expects = "{'preds': (N, C) scores or (N,) class ids, 'target': (N,) class ids}"

    def __init__(self, context: FigureContext) -> None:
        super().__init__(context)
        self.counts: ConfusionCounts | None = None

    def update(self, outputs: Any) -> None:
        preds, target = self.take(outputs, "preds", "target")
        if self.counts is None:
            self.counts = ConfusionCounts(self.class_count(preds, target))
        self.counts.update(preds, target)

    def finish(self) -> dict[str, Renderer]:
        if self.counts is None:
            return {}
        matrix = self.counts.matrix().numpy()
        return {"confusion_matrix": partial(render_confusion_matrix, matrix, self.context)}


def render_confusion_matrix(matrix: np.ndarray, context: FigureContext) -> Rendered:
    from ..plots import confusion_matrix_figure

    labels = context.names(len(matrix))
    recall = macro_recall(matrix)
    title = f"confusion matrix, macro recall {recall:.4f}"
    figure = confusion_matrix_figure(matrix, labels, title)
    data = {"labels": labels, "matrix": matrix.tolist(), "macro_recall": recall}
    caption = context.caption(f"{int(matrix.sum())} validation samples; rows: true class, columns: predicted")
    return Rendered(encode_figure(figure, context.max_side), caption, data)


def macro_recall(matrix: np.ndarray) -> float:
    """Mean recall over the classes that occur (as truth or prediction): torchmetrics' macro accuracy."""
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    seen = (support + matrix.sum(axis=0)) > 0
    if not seen.any():
        return 0.0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    return float(recall[seen].mean())
