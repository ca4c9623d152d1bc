"""Regression: prediction against truth for every validation sample, with the residuals."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..images import encode_figure
from ..jobs import Rendered
from .base import FigureContext, PerSampleFigures, Renderer

HISTOGRAM_BINS = 30


class RegressionFigures(PerSampleFigures):
    """``pred_vs_true``; the mean absolute error of its points is ``val_mae``."""

    keys = ("pred_vs_true",)
    expects = "{'preds': (N,) predictions, 'target': (N,) true values}"

    def renderers(self, preds: torch.Tensor, target: torch.Tensor) -> dict[str, Renderer]:
        return {"pred_vs_true": partial(render_pred_vs_true, preds, target, self.rows.truncated, self.context)}


def render_pred_vs_true(pred: torch.Tensor, true: torch.Tensor, truncated: bool, context: FigureContext) -> Rendered:
    from torchmetrics.functional import mean_absolute_error

    from ..plots import pred_vs_true_figure

    mae = float(mean_absolute_error(pred, true))
    p, t = pred.double().numpy(), true.double().numpy()
    residuals = p - t
    edges = np.histogram_bin_edges(residuals, bins=HISTOGRAM_BINS)
    counts = np.histogram(residuals, bins=edges)[0]
    figure = pred_vs_true_figure(p, t, edges, counts, f"prediction vs truth, MAE {mae:.4g}")
    data = {
        "pred": pred.tolist(),
        "true": true.tolist(),
        "mae": mae,
        "residual_bin_edges": edges.tolist(),
        "residual_counts": counts.tolist(),
        "truncated": truncated,
    }
    return Rendered(encode_figure(figure, context.max_side), context.caption(f"{len(pred)} validation samples"), data)
