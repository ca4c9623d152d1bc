"""The epoch record (DESIGN §2): one dict per epoch, built once, shared by every view."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Iterator, Mapping

from .clock import iso

# Keys of the record that are not metrics logged by the model.
TIME_KEY = "time"
STEP_SUFFIX = "_step"


def build_epoch_record(
    *,
    epoch: int,
    metrics: Mapping[str, Any],
    lr: float | None,
    duration_s: float,
    time: datetime,
) -> dict[str, Any]:
    """Build the record of 1-based ``epoch``.

    ``metrics`` is ``trainer.callback_metrics``: each entry becomes a float
    under its logged name, except ``*_step`` values, which belong to the step
    stream (steps.jsonl) — at epoch end they only hold the last batch, and in
    MLflow they would collide with the step curve of the same key. ``time``
    is a string, so it stays out of the metric namespace (see
    :func:`metric_items`); the MLflow mirror uses it as the points' timestamp.
    """
    record: dict[str, Any] = {"epoch": int(epoch)}
    for key, value in metrics.items():
        if key.endswith(STEP_SUFFIX):
            continue
        record[key] = as_float(value)
    if lr is not None:
        record["lr"] = float(lr)
    record["duration_s"] = round(float(duration_s), 6)
    record[TIME_KEY] = iso(time)
    return record


def as_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a finite number (NaN/Inf become ``null``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_items(record: Mapping[str, Any]) -> Iterator[tuple[str, float | None]]:
    """The metric entries of a record: every numeric key (``null`` for NaN/Inf) but ``time``."""
    for key, value in record.items():
        if key == TIME_KEY or isinstance(value, bool):
            continue
        if value is None or isinstance(value, (int, float)):
            yield key, value
