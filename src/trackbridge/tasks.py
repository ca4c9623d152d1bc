"""The seven computer-vision tasks and the metric each one is judged by (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

Mode = Literal["min", "max"]
MODES: tuple[str, ...] = ("min", "max")


@dataclass(frozen=True)
class TaskSpec:
    """A task's name and the metric that picks its best checkpoint."""

    name: str
    monitor: str
    mode: Mode


TASKS: Mapping[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("classification", "val_accuracy", "max"),
        TaskSpec("anomaly_detection", "val_auroc", "max"),
        TaskSpec("object_detection", "val_mAP", "max"),
        TaskSpec("oriented_object_detection", "val_mAP", "max"),
        TaskSpec("segmentation", "val_mIoU", "max"),
        TaskSpec("instance_segmentation", "val_mAP_mask", "max"),
        TaskSpec("regression", "val_mae", "min"),
    )
}


class UnknownTaskError(ValueError):
    """Raised for a task name that is not one of the seven."""


def get_task(name: str) -> TaskSpec:
    """Return the spec of task ``name``; an unknown name lists the seven known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UnknownTaskError(
            f"unknown task {name!r}; choose one of: {', '.join(TASKS)}"
        ) from None


def is_better(candidate: float, incumbent: float | None, mode: str) -> bool:
    """Whether ``candidate`` strictly beats ``incumbent`` under ``mode``.

    Strict, like Lightning's ModelCheckpoint, so ties keep the earlier epoch.
    """
    if incumbent is None:
        return True
    return candidate > incumbent if mode == "max" else candidate < incumbent
