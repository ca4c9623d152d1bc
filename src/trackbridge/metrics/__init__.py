"""Detection metrics in NumPy, shared by the reference models and the figures drawn from them.

Box and rotated-box IoU, and COCO's matching and interpolated precision. Nothing here knows
Lightning, torchmetrics' Metric classes, or files: arrays (or CPU tensors) in, arrays out.
"""

from .box_iou import box_iou_matrix
from .precision_recall import (
    COCO_IOU_THRESHOLDS,
    RECALL_POINTS,
    average_precision,
    interpolated_precision,
)
from .rotated_iou import rbox_corners, rbox_polygons, rotated_iou, rotated_iou_matrix

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "RECALL_POINTS",
    "average_precision",
    "box_iou_matrix",
    "interpolated_precision",
    "rbox_corners",
    "rbox_polygons",
    "rotated_iou",
    "rotated_iou_matrix",
]
