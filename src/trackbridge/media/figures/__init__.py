"""Per-task figures: which keys each of the seven tasks draws, from which validation outputs."""

from __future__ import annotations

from collections.abc import Mapping

from .anomaly import AnomalyFigures
from .base import FigureContext, OutputsError, Renderer, TaskFigures
from .classification import ClassificationFigures
from .detection import DetectionFigures, OrientedDetectionFigures
from .instance_segmentation import InstanceSegmentationFigures
from .regression import RegressionFigures
from .segmentation import SegmentationFigures

TASK_FIGURES: Mapping[str, type[TaskFigures]] = {
    "classification": ClassificationFigures,
    "anomaly_detection": AnomalyFigures,
    "object_detection": DetectionFigures,
    "oriented_object_detection": OrientedDetectionFigures,
    "segmentation": SegmentationFigures,
    "instance_segmentation": InstanceSegmentationFigures,
    "regression": RegressionFigures,
}


def figures_for(context: FigureContext) -> TaskFigures:
    """A fresh figure set for one validation epoch of ``context.task``."""
    try:
        cls = TASK_FIGURES[context.task]
    except KeyError:
        raise ValueError(f"no figures for task {context.task!r}; tasks: {', '.join(TASK_FIGURES)}") from None
    return cls(context)


__all__ = [
    "TASK_FIGURES",
    "FigureContext",
    "OutputsError",
    "Renderer",
    "TaskFigures",
    "figures_for",
]
