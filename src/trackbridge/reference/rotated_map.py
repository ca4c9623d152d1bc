"""COCO-style mean average precision for rotated boxes (torchmetrics has none).

Matching and averaging are COCOeval's (:mod:`trackbridge.metrics.precision_recall`) with
rotated IoU in place of box IoU; AP is averaged over IoU thresholds 0.50:0.95 and over the
classes that have ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..metrics.precision_recall import average_precision
from ..metrics.rotated_iou import rotated_iou_matrix
from .per_image_metric import PerImageDetections


class RotatedMeanAveragePrecision(PerImageDetections):
    """mAP over ``update(preds, target)`` for rotated boxes ``(cx, cy, w, h, theta)``.

    Dicts as torchmetrics' ``MeanAveragePrecision``: ``boxes`` (N, 5), ``labels``, and
    ``scores`` for predictions. :meth:`compute` returns ``map`` (IoU 0.50:0.95),
    ``map_50`` and ``map_75``; -1 when there is no ground truth at all.
    """

    def __init__(self, max_detections: int = 100, **kwargs: Any) -> None:
        super().__init__(("boxes", "scores", "labels"), ("boxes", "labels"), **kwargs)
        self.max_detections = max_detections

    def compute(self) -> dict[str, torch.Tensor]:
        per_class = average_precision(
            self.images(), rotated_iou_matrix, max_detections=self.max_detections
        )
        if not per_class:
            return {key: torch.tensor(-1.0) for key in ("map", "map_50", "map_75")}
        ap = np.stack(list(per_class.values()))  # (classes, thresholds)
        return {
            "map": torch.tensor(float(ap.mean()), dtype=torch.float32),
            "map_50": torch.tensor(float(ap[:, 0].mean()), dtype=torch.float32),
            "map_75": torch.tensor(float(ap[:, 5].mean()), dtype=torch.float32),
        }
