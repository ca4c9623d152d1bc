"""Prediction overlays drawn with Pillow: boxes, rotated boxes, masks, and the grid they sit in.

Coordinates are in the pixels of the original image; :func:`to_panel` brings an image to
panel size and drawings are scaled with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

# matplotlib's tab10, so overlays and figures give a class the same colour.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
COLOUR_NAMES = ("blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive", "cyan")
# A panel's longer side: small images are enlarged towards PANEL_SIDE (by a whole factor, so
# pixels stay sharp), large ones reduced to MAX_PANEL_SIDE, so that labels stay legible.
PANEL_SIDE = 160
MAX_PANEL_SIDE = 320


def colour(label: int) -> tuple[int, int, int]:
    """The colour of class ``label``."""
    return PALETTE[int(label) % len(PALETTE)]


def colour_legend(names: Sequence[str], labels: Sequence[int]) -> str:
    """``"colours: disc orange, square green"`` for the given class ids."""
    return "colours: " + ", ".join(f"{_name(names, k)} {COLOUR_NAMES[int(k) % len(COLOUR_NAMES)]}" for k in labels)


def to_panel(image: Image) -> tuple[Image, float]:
    """``image`` (RGB) at panel size, and the factor its coordinates were scaled by."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    longer = max(image.size)
    if longer > MAX_PANEL_SIDE:
        scale = MAX_PANEL_SIDE / longer
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, PILImage.Resampling.BILINEAR), scale
    factor = max(1, PANEL_SIDE // longer)
    if factor == 1:
        return image, 1.0
    return image.resize((image.width * factor, image.height * factor), PILImage.Resampling.NEAREST), float(factor)


def draw_boxes(
    image: Image,
    boxes: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    scale: float,
    scores: np.ndarray | None = None,
) -> None:
    """Outline ``(x1, y1, x2, y2)`` boxes in place, each with its class name (and score)."""
    polygons = [
        [(x1, y1), (x2, y1), (x2, y2), (x1, y2)] for x1, y1, x2, y2 in np.asarray(boxes, float).reshape(-1, 4)
    ]
    draw_polygons(image, np.asarray(polygons).reshape(-1, 4, 2), labels, names, scale=scale, scores=scores)


def draw_polygons(
    image: Image,
    polygons: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    scale: float,
    scores: np.ndarray | None = None,
) -> None:
    """Outline polygons (N, corners, 2) in place in their class colour, with name (and score)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    width = max(1, round(scale / 2))
    for k, corners in enumerate(np.asarray(polygons, float)):
        label = int(labels[k])
        fill = colour(label)
        points = [(float(x) * scale, float(y) * scale) for x, y in corners]
        draw.line([*points, points[0]], fill=fill, width=width, joint="curve")
        text = _name(names, label) if scores is None else f"{_name(names, label)} {float(scores[k]):.2f}"
        top = min(points, key=lambda p: (p[1], p[0]))
        _label(draw, top, text, fill)


def blend_classes(image: Image, class_map: np.ndarray, background: int | None, alpha: float = 0.5) -> Image:
    """``image`` with each pixel tinted by its class (``background`` left untinted)."""
    from PIL import Image as PILImage

    classes = np.asarray(class_map)
    tint = np.array([colour(k) for k in range(int(classes.max(initial=0)) + 1)], dtype=np.float64)
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    layer = tint[classes]
    keep = np.ones(classes.shape, bool) if background is None else classes != background
    out = base.copy()
    out[keep] = (1 - alpha) * base[keep] + alpha * layer[keep]
    return PILImage.fromarray(out.round().astype(np.uint8))


def blend_instances(image: Image, masks: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> Image:
    """``image`` with each instance mask (N, H, W) tinted by its class and its outline drawn."""
    from PIL import Image as PILImage

    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    out = base.copy()
    for mask, label in zip(np.asarray(masks, bool), labels):
        tint = np.array(colour(int(label)), dtype=np.float64)
        out[mask] = (1 - alpha) * out[mask] + alpha * tint
        edge = mask & ~_eroded(mask)
        out[edge] = tint
    return PILImage.fromarray(out.round().astype(np.uint8))


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """The tightest ``(x1, y1, x2, y2)`` box of each mask (N, H, W); an empty mask gives zeros."""
    boxes = np.zeros((len(masks), 4))
    for k, mask in enumerate(np.asarray(masks, bool)):
        rows, cols = np.nonzero(mask)
        if len(rows):
            boxes[k] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    return boxes


def caption_panel(image: Image, text: str) -> Image:
    """``image`` with a one-line header above it."""
    from PIL import Image as PILImage, ImageDraw

    font = _font()
    header = int(font.size + 6) if hasattr(font, "size") else 16
    panel = PILImage.new("RGB", (image.width, image.height + header), (245, 245, 245))
    panel.paste(image.convert("RGB"), (0, header))
    ImageDraw.Draw(panel).text((3, 2), text, fill=(30, 30, 30), font=font)
    return panel


def row(panels: Sequence[Image], gap: int = 2) -> Image:
    """Panels side by side."""
    from PIL import Image as PILImage

    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    height = max(p.height for p in panels)
    out = PILImage.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width + gap
    return out


def grid(cells: Sequence[Image], gap: int = 6) -> Image:
    """Cells (all one size) in a near-square grid."""
    from PIL import Image as PILImage

    if not cells:
        raise ValueError("a grid needs at least one cell")
    w, h = cells[0].size
    columns = max(1, min(len(cells), math.ceil(math.sqrt(len(cells) * h / w))))
    rows = math.ceil(len(cells) / columns)
    out = PILImage.new("RGB", (columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap), (255, 255, 255))
    for k, cell in enumerate(cells):
        out.paste(cell, ((k % columns) * (w + gap), (k // columns) * (h + gap)))
    return out


def _name(names: Sequence[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _label(draw, at: tuple[float, float], text: str, fill: tuple[int, int, int]) -> None:
    font = _font()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    # Above the object's top corner, shifted left where it would run off the panel.
    x = max(0.0, min(at[0], draw.im.size[0] - (right - left) - 4))
    y = max(0.0, at[1] - (bottom - top) - 3)
    draw.rectangle([x, y, x + right - left + 4, y + bottom - top + 3], fill=fill)
    ink = (0, 0, 0) if sum(fill) > 450 else (255, 255, 255)
    draw.text((x + 2, y + 1 - top), text, fill=ink, font=font)


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _eroded(mask: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours are all in ``mask`` (no SciPy needed for a one-pixel edge)."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
