"""Synthetic images for the vision tasks: coloured objects on a noisy background.

Every scene is drawn from a NumPy generator seeded by the caller, so a seed fixes the data
set exactly. Objects never overlap and keep a gap between them, so each has a distinct
centre cell on a stride-4 grid and its own connected component. The class of an object
sets its colour (and, for ``"shapes"``, its shape), which a tiny network learns in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

SceneKind = Literal["boxes", "rotated_boxes", "shapes"]

# One base colour per class; each object gets a random jitter around it.
PALETTE = np.array([[0.9, 0.25, 0.2], [0.2, 0.8, 0.3], [0.25, 0.35, 0.95]], dtype=np.float32)


@dataclass(frozen=True)
class SceneObject:
    """One object: its class, pixel mask, axis-aligned box and (for rotated boxes) oriented box."""

    label: int
    mask: np.ndarray  # (H, W) bool
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    rbox: tuple[float, float, float, float, float] | None  # cx, cy, w, h, theta (radians)


@dataclass(frozen=True)
class Scene:
    """An image (3, H, W) with values around [0, 1] and the objects drawn on it."""

    image: np.ndarray
    objects: list[SceneObject]

    @property
    def size(self) -> int:
        """Side of the square image, in pixels."""
        return self.image.shape[-1]


@lru_cache(maxsize=8)
def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates of the pixel centres, each (size, size); pixel (i, j) spans [j, j+1].

    Cached (read-only arrays): every mask of a data set needs the same grid.
    """
    coords = np.arange(size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(coords, coords)  # xs vary along columns, ys along rows
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def rotated_rect_mask(size: int, rbox: tuple[float, float, float, float, float]) -> np.ndarray:
    """Pixels whose centre lies in the rectangle (cx, cy, w, h, theta).

    ``theta`` turns the rectangle's w-axis from the x-axis towards the y-axis (image
    coordinates, y down), the same convention as :mod:`trackbridge.metrics.rotated_iou`.
    """
    cx, cy, w, h, theta = rbox
    xs, ys = pixel_centres(size)
    dx, dy = xs - cx, ys - cy
    c, s = math.cos(theta), math.sin(theta)
    u = c * dx + s * dy  # coordinate along the w-axis
    v = -s * dx + c * dy  # coordinate along the h-axis
    return (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)


def disc_mask(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` of (cx, cy)."""
    xs, ys = pixel_centres(size)
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2


@dataclass(frozen=True)
class _Geometry:
    """A sampled object before it is drawn: masks are only computed once it is accepted."""

    cx: float
    cy: float
    radius: float  # circumscribed circle, for the overlap test
    rbox: tuple[float, float, float, float, float] | None  # rectangles
    disc: float | None  # radius, for discs
    oriented: bool  # whether the rectangle's rbox is part of the ground truth

    def mask(self, size: int) -> np.ndarray:
        if self.rbox is not None:
            return rotated_rect_mask(size, self.rbox)
        return disc_mask(size, self.cx, self.cy, float(self.disc))


def _sample_geometry(rng: np.random.Generator, kind: SceneKind, size: int, label: int) -> _Geometry:
    """Draw one object's geometry, fully inside the image."""
    if kind == "boxes" or (kind == "shapes" and label == 1):
        # Axis-aligned, on whole pixels, so the mask fills the box exactly.
        lo, hi = (6, 14) if kind == "boxes" else (6, 11)
        w = int(rng.integers(lo, hi + 1))
        h = int(rng.integers(lo, hi + 1)) if kind == "boxes" else w  # "shapes" draws squares
        x1 = int(rng.integers(0, size - w + 1))
        y1 = int(rng.integers(0, size - h + 1))
        cx, cy = x1 + w / 2, y1 + h / 2
        return _Geometry(cx, cy, math.hypot(w, h) / 2, (cx, cy, w, h, 0.0), None, False)
    if kind == "rotated_boxes":
        # Clearly elongated (w > h), so the angle is well defined modulo pi.
        w, h = float(rng.uniform(8, 14)), float(rng.uniform(3, 6))
        theta = float(rng.uniform(0, math.pi))
        r = math.hypot(w, h) / 2
        cx, cy = (float(v) for v in rng.uniform(r, size - r, size=2))
        return _Geometry(cx, cy, r, (cx, cy, w, h, theta), None, True)
    # "shapes", label 0: a disc.
    radius = float(rng.uniform(3, 6))
    cx, cy = (float(v) for v in rng.uniform(radius, size - radius, size=2))
    return _Geometry(cx, cy, radius, None, radius, False)


def _distance(a: _Geometry, b: _Geometry) -> float:
    return math.hypot(a.cx - b.cx, a.cy - b.cy)


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tightest pixel-aligned box around a mask."""
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def render_scene(
    rng: np.random.Generator,
    kind: SceneKind,
    *,
    size: int = 32,
    num_classes: int = 2,
    max_objects: int = 3,
    gap: float = 2.0,
    noise: float = 0.1,
) -> Scene:
    """Draw one scene with 1..``max_objects`` non-overlapping objects."""
    target = int(rng.integers(1, max_objects + 1))
    placed: list[_Geometry] = []
    objects: list[SceneObject] = []
    for _ in range(target * 20):  # rejection sampling; a crowded scene just ends up smaller
        if len(objects) == target:
            break
        label = int(rng.integers(0, num_classes))
        geom = _sample_geometry(rng, kind, size, label)
        # Circumscribed circles apart by `gap`: objects never touch, centres differ by > 5.7 px.
        if any(_distance(geom, g) < geom.radius + g.radius + gap for g in placed):
            continue
        mask = geom.mask(size)
        if not mask.any():
            continue
        placed.append(geom)
        objects.append(
            SceneObject(label, mask, _mask_box(mask), geom.rbox if geom.oriented else None)
        )

    background = rng.uniform(0.0, 0.3, size=(3, 1, 1))
    image = np.broadcast_to(background, (3, size, size)).copy()
    for obj in objects:
        colour = PALETTE[obj.label % len(PALETTE)] + rng.uniform(-0.1, 0.1, size=3)
        image[:, obj.mask] = colour[:, None]
    image += rng.normal(0.0, noise, size=image.shape)
    return Scene(image.astype(np.float32), objects)


def render_scenes(n: int, kind: SceneKind, *, seed: int, **kwargs: object) -> list[Scene]:
    """``n`` scenes drawn from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return [render_scene(rng, kind, **kwargs) for _ in range(n)]  # type: ignore[arg-type]
