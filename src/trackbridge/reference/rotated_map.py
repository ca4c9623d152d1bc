"""COCO-style mean average precision for rotated boxes (torchmetrics has none).

Matching and averaging follow pycocotools' COCOeval for the "all areas, 100 detections"
setting, with rotated IoU in place of box IoU: per image and class, detections are taken
best-first and each matches the unmatched ground truth it overlaps most, if that IoU
reaches the threshold; precision is made monotone and read at 101 recall points; AP is
averaged over IoU thresholds 0.50:0.95 and over the classes that have ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .per_image_metric import ImageDict, PerImageDetections
from .rotated_iou import rotated_iou_matrix

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

IouFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def average_precision(
    images: Sequence[tuple[ImageDict, ImageDict]],
    iou_fn: IouFn = rotated_iou_matrix,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> dict[int, np.ndarray]:
    """AP per class (only classes with ground truth) -> array of one AP per IoU threshold.

    ``images`` pairs each image's prediction dict (``boxes``, ``scores``, ``labels``) with its
    target dict (``boxes``, ``labels``); ``iou_fn`` maps (D, 5) and (G, 5) boxes to a (D, G) IoU.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    gt_labels = [t["labels"].cpu().numpy() for _, t in images]
    classes = sorted(set(np.concatenate(gt_labels).tolist())) if gt_labels else []
    result: dict[int, np.ndarray] = {}
    for k in classes:
        n_gt = 0
        scores: list[np.ndarray] = []
        matched: list[np.ndarray] = []  # (D, T) bool per image
        for pred, target in images:
            gt = target["boxes"][target["labels"] == k].cpu().double().numpy()
            keep = (pred["labels"] == k).cpu().numpy()
            dt = pred["boxes"].cpu().double().numpy()[keep]
            sc = pred["scores"].cpu().double().numpy()[keep]
            order = np.argsort(-sc, kind="mergesort")[:max_detections]
            dt, sc = dt[order], sc[order]
            n_gt += len(gt)
            scores.append(sc)
            iou = iou_fn(dt, gt) if len(dt) and len(gt) else np.zeros((len(dt), len(gt)))
            matched.append(_match(iou, thresholds))
        result[int(k)] = _ap_from_matches(np.concatenate(scores), np.concatenate(matched), n_gt)
    return result


def _match(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching for one image and class; ``iou`` rows are detections, best first."""
    n_det, n_gt = iou.shape
    is_tp = np.zeros((n_det, len(thresholds)), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(n_gt, dtype=bool)
        for d in range(n_det):
            best, best_iou = -1, min(t, 1 - 1e-10)
            for g in range(n_gt):
                if taken[g] or iou[d, g] < best_iou:
                    continue
                best, best_iou = g, iou[d, g]
            if best >= 0:
                taken[best] = True
                is_tp[d, ti] = True
    return is_tp


def _ap_from_matches(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> np.ndarray:
    """101-point interpolated AP per threshold from every detection's score and TP flags."""
    aps = np.zeros(is_tp.shape[1])
    if len(scores) == 0:
        return aps  # ground truth but no detections: nothing recalled
    order = np.argsort(-scores, kind="mergesort")
    is_tp = is_tp[order]
    tp = np.cumsum(is_tp, axis=0, dtype=np.float64)
    fp = np.cumsum(~is_tp, axis=0, dtype=np.float64)
    for ti in range(is_tp.shape[1]):
        recall = tp[:, ti] / n_gt
        precision = tp[:, ti] / (tp[:, ti] + fp[:, ti])
        # Precision envelope: the best precision at this recall or any higher one.
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        # Recall levels never reached count as precision 0.
        sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
        aps[ti] = sampled.mean()
    return aps


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
        per_class = average_precision(self.images(), max_detections=self.max_detections)
        if not per_class:
            return {key: torch.tensor(-1.0) for key in ("map", "map_50", "map_75")}
        ap = np.stack(list(per_class.values()))  # (classes, thresholds)
        return {
            "map": torch.tensor(float(ap.mean()), dtype=torch.float32),
            "map_50": torch.tensor(float(ap[:, 0].mean()), dtype=torch.float32),
            "map_75": torch.tensor(float(ap[:, 5].mean()), dtype=torch.float32),
        }
