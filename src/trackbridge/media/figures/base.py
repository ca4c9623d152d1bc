"""What every task's figures share: the context they are drawn in and the two-sided contract.

A :class:`TaskFigures` lives one validation epoch. On the training thread, :meth:`update`
takes each ``validation_step`` output and keeps only cheap, bounded state; :meth:`finish`
hands that state over as CPU tensors inside one function per figure key. Those functions
run in the run's render process (they are pickled there: module-level functions bound with
``functools.partial``): they compute the numbers (torchmetrics' functional metrics where
they compute what the figure shows) and draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..accumulators import Rows
from ..jobs import Rendered

Renderer = Callable[[], Rendered]
# Above this many points a curve's data file keeps an even subsample (flagged "thinned").
MAX_CURVE_POINTS = 20_000


class OutputsError(ValueError):
    """``validation_step`` did not return what the task's figures need."""


@dataclass(frozen=True)
class FigureContext:
    """How figures are drawn for one run: task, class names, sample count, size cap."""

    task: str
    class_names: tuple[str, ...] = field(default_factory=tuple)
    num_classes: int | None = None
    samples: int = 8
    max_side: int = 1024
    world_size: int = 1

    def name(self, label: int) -> str:
        """The name of class ``label``: the module's own, else the class id as text."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def names(self, count: int) -> list[str]:
        """The names of classes ``0 .. count - 1``."""
        return [self.name(k) for k in range(count)]

    def caption(self, text: str) -> str:
        """``text``, noting when a figure sees only this process's share of the data."""
        if self.world_size > 1:
            return f"{text} (rank 0's share of the validation set, 1 of {self.world_size} processes)"
        return text


class TaskFigures:
    """Base of the per-task figure sets; ``keys`` lists what :meth:`finish` draws."""

    keys: ClassVar[tuple[str, ...]] = ()
    # What validation_step must return, in words (error messages and the README).
    expects: ClassVar[str] = ""

    def __init__(self, context: FigureContext) -> None:
        self.context = context

    def update(self, outputs: Any) -> None:
        """Keep what the figures need of one validation batch's outputs (training thread)."""
        raise NotImplementedError

    def finish(self) -> dict[str, Renderer]:
        """One drawing function per key, holding CPU copies of the epoch's state."""
        raise NotImplementedError

    def take(self, outputs: Any, *names: str) -> tuple[Any, ...]:
        """``outputs[name]`` for each name, or an :class:`OutputsError` that says what is expected."""
        if not isinstance(outputs, Mapping) or any(name not in outputs for name in names):
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise OutputsError(
                f"{self.context.task} figures need validation_step to return {self.expects}; got {got} "
                "(README: Figures and images)"
            )
        return tuple(outputs[name] for name in names)

    def class_count(self, preds: torch.Tensor, target: torch.Tensor) -> int:
        """Classes of torchmetrics' multiclass format: from scores (N, C, ...) or the context."""
        if preds.is_floating_point() and preds.ndim == target.ndim + 1:
            return int(preds.shape[1])
        if self.context.num_classes:
            return self.context.num_classes
        if self.context.class_names:
            return len(self.context.class_names)
        raise OutputsError(
            f"{self.context.task} figures got class ids as 'preds' but do not know how many classes "
            "there are: return scores (N, C, ...), or give the module a `num_classes` "
            "hyperparameter or a `class_names` attribute"
        )


class PerSampleFigures(TaskFigures):
    """Figures over a (prediction, target) pair per validation sample, every sample kept."""

    expects = "{'preds': (N,) values, 'target': (N,) values}"

    def __init__(self, context: FigureContext) -> None:
        super().__init__(context)
        self.rows = Rows(columns=2)

    def update(self, outputs: Any) -> None:
        preds, target = self.take(outputs, "preds", "target")
        self.rows.update(preds, target)

    def finish(self) -> dict[str, Renderer]:
        preds, target = self.rows.columns()
        return self.renderers(preds, target) if len(preds) else {}

    def renderers(self, preds: torch.Tensor, target: torch.Tensor) -> dict[str, Renderer]:
        """The drawing functions for the epoch's samples (CPU tensors)."""
        raise NotImplementedError


def in_inference_mode(render: Renderer) -> Any:
    """``render()`` under torch's inference mode (the epoch's tensors may be inference tensors).

    Lightning's evaluation loop makes inference tensors; the mode is per thread, so a
    drawing on the media thread enters it to work on them. (In the render process they
    arrive as ordinary tensors; the mode costs nothing there.)
    """
    with torch.inference_mode():
        return render()


def thin(*columns: torch.Tensor, limit: int = MAX_CURVE_POINTS) -> tuple[list[list[float]], bool]:
    """Aligned columns as lists, evenly subsampled (ends kept) when longer than ``limit``."""
    n = len(columns[0])
    if n <= limit:
        return [c.tolist() for c in columns], False
    index = torch.linspace(0, n - 1, limit).round().long()
    return [c[index].tolist() for c in columns], True
