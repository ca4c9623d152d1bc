"""Reference models: one tiny LightningModule plus data per computer-vision task.

``build_reference(task)`` returns a (model, datamodule) pair that trains on a CPU in a few
seconds per 3 epochs, logs ``train_loss``, ``val_loss`` and the task's monitored metric,
and needs no download (scikit-learn's bundled data sets, or images generated from a seed).

Task modules are imported only when asked for, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, LightningModule

REFERENCE_TASKS: tuple[str, ...] = (
    "classification",
    "anomaly_detection",
    "object_detection",
    "oriented_object_detection",
    "segmentation",
    "instance_segmentation",
    "regression",
)

# task -> submodule with a `build(*, seed, steps_per_epoch, batch_size)` function.
_BUILDERS: dict[str, str] = {
    "classification": "classification",
    "anomaly_detection": "anomaly",
    "object_detection": "detection",
    "oriented_object_detection": "oriented",
    "segmentation": "segmentation",
    "instance_segmentation": "instance_segmentation",
    "regression": "regression",
}

# Public model classes, importable from here without importing every task up front.
_EXPORTS: dict[str, str] = {
    "DigitsClassifier": "classification",
    "DigitsAutoencoder": "anomaly",
    "BoxDetector": "detection",
    "OrientedBoxDetector": "oriented",
    "ShapeSegmenter": "segmentation",
    "InstanceSegmenter": "instance_segmentation",
    "DiabetesRegressor": "regression",
    "ReferenceDataModule": "data",
    "RotatedMeanAveragePrecision": "rotated_map",
    "CocoMeanAveragePrecision": "coco_map",
}

__all__ = ["REFERENCE_TASKS", "build_reference", *_EXPORTS]


def build_reference(
    task: str,
    *,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
) -> tuple[LightningModule, LightningDataModule]:
    """The reference model and data module for ``task``.

    ``seed`` fixes the data (split, generated images, shuffling) and the model's initial
    weights, without touching the caller's global random state. ``steps_per_epoch`` asks
    for exactly that many training batches per epoch; ``batch_size`` overrides the task's
    default. Raises ``ValueError`` for an unknown task, listing the known ones.
    """
    if task not in _BUILDERS:
        known = ", ".join(REFERENCE_TASKS)
        raise ValueError(f"unknown reference task {task!r}; choose one of: {known}")
    import torch

    builder = importlib.import_module(f"{__name__}.{_BUILDERS[task]}").build
    # Seeded initial weights from a forked RNG: reproducible, and the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(seed=seed, steps_per_epoch=steps_per_epoch, batch_size=batch_size)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
