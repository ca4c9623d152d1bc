"""What the media thread works on: a job (a key at a step, and how to draw it) and what it drew."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Mapping, Union

from ..record.media import MediaKind
from .images import EncodedImage


@dataclass(frozen=True)
class Rendered:
    """What a job drew: an encoded image, its caption and the numbers it shows (or None)."""

    image: EncodedImage
    caption: str | None = None
    data: Mapping[str, Any] | None = None


#: A job's drawing: a function (pickled to the render process: a module-level function or a
#: ``functools.partial`` of one, over CPU arrays) or, for what the caller encoded already, the result.
Render = Union[Callable[[], Union[Rendered, Sequence[Rendered]]], Rendered]


@dataclass(frozen=True)
class MediaJob:
    """One key at one step; ``render`` draws it (one or more images), away from the training thread."""

    key: str
    step: int
    epoch: int
    kind: MediaKind
    render: Render
