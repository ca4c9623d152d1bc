"""What the training thread keeps of a validation epoch for the figures: cheap, bounded, detached.

Counts stay on the tensors' device until the epoch ends (no per-batch device sync); at the
end each accumulator hands over plain CPU tensors, and the drawing happens elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

# Most values a per-sample list keeps (scores, predictions): 4 MB of float32 each.
MAX_ROWS = 1_000_000
# Most images whose detections are kept for precision-recall curves.
MAX_DETECTION_IMAGES = 20_000


class ConfusionCounts:
    """Confusion matrix over every sample seen (rows = true class), counted by torchmetrics.

    ``preds`` and ``target`` are in torchmetrics' multiclass format: scores (N, C, ...) or
    class ids (N, ...), and class ids (N, ...) — so pixels of a segmentation batch count too.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self._counts: torch.Tensor | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        counts = multiclass_confusion_matrix(
            preds.detach(), target.detach(), self.num_classes, validate_args=False
        )
        self._counts = counts if self._counts is None else self._counts + counts

    def matrix(self) -> torch.Tensor:
        """The (C, C) counts on the CPU (zeros before any update)."""
        if self._counts is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self._counts.cpu()


class Rows:
    """Per-sample values of several aligned columns (e.g. scores and targets), up to ``max_rows``."""

    def __init__(self, columns: int, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.truncated = False
        self._columns: list[list[torch.Tensor]] = [[] for _ in range(columns)]
        self._rows = 0

    def update(self, *values: torch.Tensor) -> None:
        flat = [v.detach().reshape(-1) for v in values]
        if len({len(v) for v in flat}) != 1:
            raise ValueError(f"columns of one batch differ in length: {[len(v) for v in flat]}")
        room = self.max_rows - self._rows
        if room <= 0:
            self.truncated = True
            return
        if len(flat[0]) > room:
            self.truncated = True
            flat = [v[:room] for v in flat]
        for column, value in zip(self._columns, flat):
            column.append(value)
        self._rows += len(flat[0])

    def columns(self) -> list[torch.Tensor]:
        """Each column concatenated, on the CPU."""
        return [torch.cat(c).cpu() if c else torch.zeros(0) for c in self._columns]


class SampleImages:
    """The first ``limit`` samples of the epoch: images and, per sample, what goes with them.

    The validation loader is not shuffled, so these are the same samples every epoch.
    Per-sample fields are tensors indexed by sample or lists (e.g. a dict per image).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[tuple[Any, ...]] = []

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def update(self, images: torch.Tensor, *fields: Any) -> None:
        take = min(self.limit - len(self.items), len(images))
        for i in range(max(0, take)):
            self.items.append((_cpu_copy(images[i]), *(_cpu_copy(f[i]) for f in fields)))


class DetectionList:
    """Every image's (prediction, target) dicts, detached on the CPU, for precision-recall."""

    def __init__(self, max_images: int = MAX_DETECTION_IMAGES) -> None:
        self.max_images = max_images
        self.truncated = False
        self.images: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    def update(self, preds: Sequence[Mapping[str, Any]], target: Sequence[Mapping[str, Any]]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"got {len(preds)} prediction dicts for {len(target)} target dicts")
        for pred, truth in zip(preds, target):
            if len(self.images) >= self.max_images:
                self.truncated = True
                return
            self.images.append((_cpu_copy(dict(pred)), _cpu_copy(dict(truth))))


def _cpu_copy(value: Any) -> Any:
    """A detached CPU copy of a tensor, or of the tensors in a dict; other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: _cpu_copy(v) for k, v in value.items()}
    return value
