"""The ``predictions`` grid every image task draws: a fixed sample of validation images, each
shown as a few panels side by side (the image, its ground truth, the model's prediction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..images import encode_png, to_pil
from ..writer import Rendered
from .base import FigureContext

if TYPE_CHECKING:
    from PIL.Image import Image

# Predictions drawn on an image: at most this many, scoring at least SCORE_THRESHOLD.
SCORE_THRESHOLD = 0.25
MAX_DRAWN = 30


def base_image(image: torch.Tensor) -> Image:
    """A sample image (C, H, W) as an RGB PIL image."""
    return to_pil(image.float().numpy() if image.is_floating_point() else image.numpy()).convert("RGB")


def panel_objects(item: Mapping[str, torch.Tensor], *, predicted: bool) -> dict[str, np.ndarray]:
    """What a panel draws, as NumPy arrays: every ground-truth object; for predictions the
    ones scoring at least SCORE_THRESHOLD, best first, at most MAX_DRAWN."""
    if predicted:
        scores = item["scores"].double().numpy()
        order = np.argsort(-scores, kind="mergesort")
        keep = order[scores[order] >= SCORE_THRESHOLD][:MAX_DRAWN]
    else:
        keep = np.arange(len(item["labels"]))
    return {k: item[k].numpy()[keep] for k in ("boxes", "masks", "labels", "scores") if k in item}


def as_lists(objects: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A panel's boxes, labels and scores as JSON-ready lists (masks stay in the image)."""
    return {k: objects[k].tolist() for k in ("boxes", "labels", "scores") if k in objects}


def render_grid(
    cells: Sequence[Image],
    panels: Sequence[str],
    context: FigureContext,
    data: Mapping[str, Any] | None,
    *,
    scored: bool,
) -> Rendered:
    """Encode the grid of sample cells with a caption naming the panels."""
    from ..overlays import grid

    text = f"{len(cells)} validation samples; each: {' | '.join(panels)}"
    if scored:
        text += f" (predictions scoring >= {SCORE_THRESHOLD})"
    caption = context.caption(text)
    return Rendered(encode_png(grid(cells), context.max_side), caption, data)
