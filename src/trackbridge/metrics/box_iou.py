"""IoU of axis-aligned boxes, computed by pycocotools so it is exactly the one COCO mAP uses."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def box_iou_matrix(boxes_a: ArrayLike, boxes_b: ArrayLike) -> np.ndarray:
    """IoU of every box in ``boxes_a`` (N, 4) with every box in ``boxes_b`` (M, 4) -> (N, M).

    Boxes are ``(x1, y1, x2, y2)`` in pixels, the layout of torchmetrics' ``MeanAveragePrecision``.
    """
    from pycocotools import mask as mask_utils  # a C extension: imported when first needed

    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    xywh_a = np.concatenate([a[:, :2], a[:, 2:] - a[:, :2]], axis=1)
    xywh_b = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    iou = mask_utils.iou(xywh_a, xywh_b, [0] * len(b))  # no crowd boxes
    return np.asarray(iou, dtype=np.float64).reshape(len(a), len(b))
