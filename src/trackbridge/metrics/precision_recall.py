"""COCO's matching of detections to ground truth, and its 101-point interpolated precision.

This follows pycocotools' COCOeval for the "all areas, 100 detections" setting, with any IoU
function: per image and class, detections are taken best-first and each matches the unmatched
ground truth it overlaps most, if that IoU reaches the threshold; precision is made monotone
and read at 101 recall points. AP is the mean of those 101 values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

IouFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# One image's dict: prediction ``boxes``, ``scores``, ``labels``; target ``boxes``, ``labels``.
ImageDict = Mapping[str, Any]


def interpolated_precision(
    images: Sequence[tuple[ImageDict, ImageDict]],
    iou_fn: IouFn,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> dict[int, np.ndarray]:
    """Per class with ground truth: precision at :data:`RECALL_POINTS`, (thresholds, 101).

    ``images`` pairs each image's prediction dict with its target dict (tensors or arrays);
    ``iou_fn`` maps (D, box) and (G, box) boxes to a (D, G) IoU matrix.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    gt_labels = [_array(t["labels"]) for _, t in images]
    classes = sorted(set(np.concatenate(gt_labels).tolist())) if gt_labels else []
    result: dict[int, np.ndarray] = {}
    for k in classes:
        n_gt = 0
        scores: list[np.ndarray] = []
        matched: list[np.ndarray] = []  # (D, T) bool per image
        for pred, target in images:
            gt = _array(target["boxes"], np.float64)[_array(target["labels"]) == k]
            keep = _array(pred["labels"]) == k
            dt = _array(pred["boxes"], np.float64)[keep]
            sc = _array(pred["scores"], np.float64)[keep]
            order = np.argsort(-sc, kind="mergesort")[:max_detections]
            dt, sc = dt[order], sc[order]
            n_gt += len(gt)
            scores.append(sc)
            iou = iou_fn(dt, gt) if len(dt) and len(gt) else np.zeros((len(dt), len(gt)))
            matched.append(match_detections(iou, thresholds))
        result[int(k)] = precision_envelope(np.concatenate(scores), np.concatenate(matched), n_gt)
    return result


def average_precision(
    images: Sequence[tuple[ImageDict, ImageDict]],
    iou_fn: IouFn,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> dict[int, np.ndarray]:
    """AP per class with ground truth -> one AP per IoU threshold (see :func:`interpolated_precision`)."""
    curves = interpolated_precision(images, iou_fn, iou_thresholds, max_detections)
    return {k: precision.mean(axis=-1) for k, precision in curves.items()}


def match_detections(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching for one image and class; ``iou`` rows are detections, best first.

    Returns (detections, thresholds) bool: whether each detection is a true positive.
    """
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


def precision_envelope(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> np.ndarray:
    """Interpolated precision at the 101 recall points per threshold, (thresholds, 101)."""
    curves = np.zeros((is_tp.shape[1], len(RECALL_POINTS)))
    if len(scores) == 0:
        return curves  # ground truth but no detections: nothing recalled
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
        curves[ti] = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return curves


def _array(values: Any, dtype: Any = None) -> np.ndarray:
    """A NumPy array from a CPU/GPU tensor or anything array-like."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)
