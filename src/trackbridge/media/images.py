"""Images in, PNG bytes out: what ``log_image`` accepts, the size cap, and figure encoding.

Pillow and matplotlib are imported inside the functions (they run on the media thread),
so importing trackbridge stays cheap.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL.Image import Image

ACCEPTED = "a numpy array, a torch tensor (CHW or HWC; grey, RGB or RGBA) or a PIL image"
# Float images further than this outside [0, 1] are taken as normalised and min-max rescaled.
_FLOAT_SLACK = 0.5


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image and its size in pixels."""

    data: bytes
    width: int
    height: int
    image_format: str = "png"


def snapshot_image(image: Any) -> Any:
    """A private copy of ``image`` taken on the caller's thread (the caller may change it later).

    Tensors become CPU numpy arrays; arrays and PIL images are copied. Anything else is
    refused with a ``TypeError`` that lists what is accepted.
    """
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, on any device
        tensor = image.detach().to("cpu", copy=True)
        if tensor.dtype.is_floating_point:
            tensor = tensor.float()  # numpy has no bfloat16
        return tensor.numpy()
    if isinstance(image, np.ndarray):
        return image.copy()
    if _is_pil(image):
        return image.copy()
    raise TypeError(f"an image must be {ACCEPTED}; got {type(image).__name__}")


def to_pil(image: Any) -> Image:
    """A PIL image (L, RGB or RGBA) from anything :func:`snapshot_image` accepts.

    Layout: (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 (a leading C wins only when the
    last axis cannot be channels). Values: uint8 as they are; bool as black/white; floats
    as [0, 1] (clipped) unless they lie far outside it (a normalised tensor), in which case
    the image's own min-max range is stretched to 0-255; other integers likewise.
    """
    from PIL import Image as PILImage

    if _is_pil(image):
        return image if image.mode in ("L", "RGB", "RGBA") else image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"an image must have pixels; got shape {array.shape}")
    return PILImage.fromarray(_to_uint8(array))


def fit(image: Image, max_side: int) -> Image:
    """``image`` scaled down (never up) so that its longer side is at most ``max_side``."""
    from PIL import Image as PILImage

    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, PILImage.Resampling.LANCZOS)


def encode_png(image: Image, max_side: int) -> EncodedImage:
    """PNG bytes of ``image``, scaled down to ``max_side`` first."""
    image = fit(image, max_side)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return EncodedImage(buffer.getvalue(), image.width, image.height)


def encode_figure(figure: Figure, max_side: int) -> EncodedImage:
    """PNG bytes of a matplotlib figure, at a dpi that keeps its longer side within ``max_side``.

    ``savefig`` renders with Agg whatever the figure's own canvas (pyplot's included).
    """
    from PIL import Image as PILImage

    width_in, height_in = figure.get_size_inches()
    dpi = min(float(figure.dpi), max_side / max(width_in, height_in, 1e-6))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    data = buffer.getvalue()
    with PILImage.open(io.BytesIO(data)) as decoded:  # reads the header only
        width, height = decoded.size
    return EncodedImage(data, width, height)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(array.dtype, np.floating):
        if low >= -_FLOAT_SLACK and high <= 1 + _FLOAT_SLACK:
            return (np.clip(values, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif low >= 0 and high <= 255:
        return values.astype(np.uint8)
    span = high - low
    scaled = (values - low) / span if span > 0 else np.zeros_like(values)
    return (scaled * 255 + 0.5).astype(np.uint8)


def _is_pil(image: Any) -> bool:
    # No Pillow import just to check a type: a PIL image class lives in a PIL module.
    return type(image).__module__.startswith("PIL.") and hasattr(image, "mode")
