"""The ``predictions`` grid every image task draws: a fixed sample of validation images, each
shown as a few panels side by side (the image, its ground truth, the model's prediction)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..images import encode_png, to_pil
from ..jobs import Rendered
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
    labels: Sequence[int],
) -> Rendered:
    """Encode the grid of sample cells, captioned with its panels and the classes' colours."""
    from ..overlays import colour_legend, grid

    text = f"{len(cells)} validation samples; each: {' | '.join(panels)}"
    if scored:
        text += f" (predictions scoring >= {SCORE_THRESHOLD})"
    if labels:
        text += f"; {colour_legend(context.class_names, sorted(set(labels)))}"
    caption = context.caption(text)
    return Rendered(encode_png(grid(cells), context.max_side), caption, data)


# Draws one panel: the sample's image and the objects it shows -> the panel.
PanelDrawer = Callable[["Image", dict[str, np.ndarray]], "Image"]


def render_object_grid(samples: Sequence[tuple[Any, ...]], draw: PanelDrawer, context: FigureContext) -> Rendered:
    """The grid of (image, prediction dict, target dict) samples as ground truth | prediction panels.

    The data file lists, per sample, the boxes, labels and scores each panel draws.
    """
    from ..overlays import caption_panel, row

    cells, drawn = [], []
    for image, pred, truth in samples:
        panels, record = [], {}
        for title, name, item in (("ground truth", "target", truth), ("prediction", "preds", pred)):
            objects = panel_objects(item, predicted=item is pred)
            panels.append(caption_panel(draw(base_image(image), objects), title))
            record[name] = as_lists(objects)
        cells.append(row(panels))
        drawn.append(record)
    labels = [k for sample in drawn for side in sample.values() for k in side["labels"]]
    return render_grid(cells, ("ground truth", "prediction"), context, {"samples": drawn}, scored=True, labels=labels)
