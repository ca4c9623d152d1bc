"""Intersection over union of rotated rectangles, by exact polygon clipping (shapely).

A rotated box is ``(cx, cy, w, h, theta)``: centre, side lengths, and the angle in radians
that turns the w-side from the x-axis towards the y-axis. In image coordinates (y down)
that is clockwise on screen; in ordinary maths axes (y up) it is counter-clockwise. The
IoU itself does not depend on which, as long as both boxes use the same convention.
"""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import ArrayLike


def rbox_corners(boxes: ArrayLike) -> np.ndarray:
    """Corners of rotated boxes (..., 5) -> (..., 4, 2), in order around the rectangle."""
    b = np.asarray(boxes, dtype=np.float64)
    cx, cy, w, h, theta = np.moveaxis(b, -1, 0)
    c, s = np.cos(theta), np.sin(theta)
    # Half-extents along the box's own axes, then rotated: p = centre + R(theta) @ (u, v).
    u = np.stack([w, -w, -w, w], axis=-1) / 2
    v = np.stack([h, h, -h, -h], axis=-1) / 2
    x = cx[..., None] + c[..., None] * u - s[..., None] * v
    y = cy[..., None] + s[..., None] * u + c[..., None] * v
    return np.stack([x, y], axis=-1)


def rbox_polygons(boxes: ArrayLike) -> np.ndarray:
    """Shapely polygons of rotated boxes (N, 5) -> (N,) array of Polygon."""
    corners = rbox_corners(np.asarray(boxes, dtype=np.float64).reshape(-1, 5))
    return shapely.polygons(corners)


def rotated_iou_matrix(boxes_a: ArrayLike, boxes_b: ArrayLike) -> np.ndarray:
    """IoU of every box in ``boxes_a`` (N, 5) with every box in ``boxes_b`` (M, 5) -> (N, M).

    Boxes with no area (w or h <= 0) have IoU 0 with everything, rather than dividing by 0.
    """
    arr_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 5)
    arr_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 5)
    if len(arr_a) == 0 or len(arr_b) == 0:
        return np.zeros((len(arr_a), len(arr_b)))
    a, b = rbox_polygons(arr_a), rbox_polygons(arr_b)
    inter = shapely.area(shapely.intersection(a[:, None], b[None, :]))
    union = shapely.area(a)[:, None] + shapely.area(b)[None, :] - inter
    iou = inter / np.where(union > 0, union, 1.0)
    # A negative side would still draw a (mirrored) rectangle, so rule such boxes out explicitly.
    valid_a = (arr_a[:, 2] > 0) & (arr_a[:, 3] > 0)
    valid_b = (arr_b[:, 2] > 0) & (arr_b[:, 3] > 0)
    iou = np.where(valid_a[:, None] & valid_b[None, :] & (union > 0), iou, 0.0)
    return np.clip(iou, 0.0, 1.0)


def rotated_iou(box_a: ArrayLike, box_b: ArrayLike) -> float:
    """IoU of two rotated boxes ``(cx, cy, w, h, theta)``."""
    return float(rotated_iou_matrix(np.reshape(box_a, (1, 5)), np.reshape(box_b, (1, 5)))[0, 0])
