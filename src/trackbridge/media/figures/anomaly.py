"""Anomaly detection: the ROC curve of the anomaly score, and the score's histogram by true class."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..images import encode_figure
from ..jobs import Rendered
from .base import FigureContext, PerSampleFigures, Renderer, thin

HISTOGRAM_BINS = 30


class AnomalyFigures(PerSampleFigures):
    """``roc_curve`` (torchmetrics' binary ROC; its area is ``val_auroc``) and ``score_histogram``."""

    keys = ("roc_curve", "score_histogram")
    expects = "{'preds': (N,) anomaly scores, 'target': (N,) labels, 1 = anomaly}"

    def renderers(self, preds: torch.Tensor, target: torch.Tensor) -> dict[str, Renderer]:
        scores, target = preds.float(), target.long()
        return {
            "roc_curve": partial(render_roc_curve, scores, target, self.rows.truncated, self.context),
            "score_histogram": partial(render_score_histogram, scores, target, self.context),
        }


def class_labels(context: FigureContext) -> list[str]:
    """Names of label 0 and label 1."""
    names = list(context.class_names[:2])
    return names + ["normal", "anomaly"][len(names):]


def render_roc_curve(
    scores: torch.Tensor, target: torch.Tensor, truncated: bool, context: FigureContext
) -> Rendered:
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    from ..plots import roc_figure

    fpr, tpr, thresholds = binary_roc(scores, target)
    auc = float(binary_auroc(scores, target))
    (fpr_l, tpr_l, thr_l), thinned = thin(fpr, tpr, thresholds)
    figure = roc_figure(np.asarray(fpr_l), np.asarray(tpr_l), f"ROC curve, AUC {auc:.4f}")
    data = {"fpr": fpr_l, "tpr": tpr_l, "thresholds": thr_l, "auc": auc, "thinned": thinned, "truncated": truncated}
    positives = int(target.sum())
    caption = context.caption(f"{len(target)} validation samples, {positives} anomalous")
    return Rendered(encode_figure(figure, context.max_side), caption, data)


def render_score_histogram(scores: torch.Tensor, target: torch.Tensor, context: FigureContext) -> Rendered:
    from ..plots import histogram_figure

    values = scores.double().numpy()
    edges = np.histogram_bin_edges(values, bins=HISTOGRAM_BINS)
    labels = class_labels(context)
    by_class = [values[target.numpy() == k] for k in (0, 1)]
    counts = [np.histogram(v, bins=edges)[0] for v in by_class]
    figure = histogram_figure(edges, counts, labels, "anomaly score", "anomaly score by true class")
    data = {
        "labels": labels,
        "scores": [v.tolist() for v in by_class],
        "bin_edges": edges.tolist(),
        "counts": [c.tolist() for c in counts],
    }
    return Rendered(encode_figure(figure, context.max_side), context.caption("scores of normal and anomalous samples"), data)
