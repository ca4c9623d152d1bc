"""The local record → MLflow entities (DESIGN §6), as pure functions with no MLflow import.

Points keep the record's own timestamps, so replaying a record produces the
very same points: a SQL-backed MLflow store drops an identical point, and
:mod:`trackbridge.mirror.sync` skips any ``(key, step)`` MLflow already has.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

from ..mlflow_tags import MAX_TAG_VALUE_LENGTH, RUN_ID_TAG, VERSION_TAG
from ..record.clock import parse_iso
from ..record.epoch import TIME_KEY, metric_items
from ..record.status import RunStatus

log = logging.getLogger(__name__)

# MLflow's limits per log_batch request (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_REQUEST_BYTES = 1_000_000
# Room left for the request's JSON framing and our size estimate's error.
BATCH_BYTES_BUDGET = 900_000
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000

MLFLOW_STATUS: Mapping[RunStatus, str] = {
    RunStatus.PENDING: "RUNNING",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.STOPPED: "KILLED",
}

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


class Point(NamedTuple):
    """One metric point: what ``mlflow.entities.Metric`` holds, without importing MLflow."""

    key: str
    value: float
    timestamp: int  # ms since the epoch, from the record
    step: int


def mlflow_status(status: RunStatus | str) -> str:
    """RUNNING / FINISHED / FAILED / KILLED for a trackbridge status."""
    return MLFLOW_STATUS[RunStatus(status)]


def iso_to_ms(text: str) -> int:
    return int(round(parse_iso(text).timestamp() * 1000))


def epoch_points(record: Mapping[str, Any]) -> list[Point]:
    """Every numeric key of an epoch record at ``step = epoch``, stamped with the record's time.

    ``null`` values (NaN or ±Inf in training) are skipped: the record cannot
    say which of the three it was, and MLflow's history then equals the
    numbers metrics.json holds.
    """
    step = int(record["epoch"])
    timestamp = iso_to_ms(record[TIME_KEY])
    return [
        Point(clean_key(key), float(value), timestamp, step)
        for key, value in metric_items(record)
        if value is not None
    ]


def step_points(line: Mapping[str, Any]) -> list[Point]:
    """The metrics of a steps.jsonl line at ``step = global step``; ``null`` skipped likewise."""
    step = int(line["step"])
    timestamp = iso_to_ms(line[TIME_KEY])
    return [
        Point(clean_key(key), float(value), timestamp, step)
        for key, value in line.items()
        if key not in ("step", TIME_KEY)
        and value is not None
        and not isinstance(value, bool)
        and isinstance(value, (int, float))
    ]


def record_points(epochs: Iterable[Mapping[str, Any]], steps: Iterable[Mapping[str, Any]]) -> list[Point]:
    """All points of a local record (metrics.json epochs, then steps.jsonl lines)."""
    points: list[Point] = []
    for record in epochs:
        points.extend(epoch_points(record))
    for line in steps:
        points.extend(step_points(line))
    return points


def clean_key(key: str) -> str:
    """A key MLflow accepts: its allowed characters only, at most 250 of them."""
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY_LENGTH] or "_"


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` → ``("a.b", 1)``; lists stay whole values."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _param_value(key: str, value: Any) -> str:
    text = "" if value is None else str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        log.warning(
            "MLflow param %r is %d characters long; truncated to MLflow's limit of %d",
            key, len(text), MAX_PARAM_VALUE_LENGTH,
        )
        text = text[:MAX_PARAM_VALUE_LENGTH]
    return text


def run_params(run: Mapping[str, Any], model_hparams: Mapping[str, Any] | None = None) -> dict[str, str]:
    """MLflow params of a run: the config's hyperparameters, the model's, then the tracking config.

    Hyperparameters keep their own (flattened) names, as Lightning's MLflow
    logger shows them; the tracking config's fields follow under their field
    names. A later source never overwrites an earlier one: a clash with a
    different value goes under a prefix (``model.`` or ``trackbridge.``).
    """
    config = dict(run.get("config") or {})
    hyper = config.pop("hyperparameters", None) or run.get("hyperparameters") or {}
    sources = (("", hyper), ("model.", model_hparams or {}), ("trackbridge.", config))
    params: dict[str, str] = {}
    for prefix, source in sources:
        for key, value in flatten(source):
            name = clean_key(key)
            text = _param_value(name, value)
            if name in params and params[name] != text:
                name = clean_key(prefix + key)
            params.setdefault(name, text)
    return params


def run_tags(run: Mapping[str, Any], version: str) -> dict[str, str]:
    """Tags that describe and link the run: task, monitor, mode, host, version, local run id."""
    tags = {
        RUN_ID_TAG: str(run["run_id"]),
        VERSION_TAG: str(run.get("trackbridge_version") or version),
    }
    for key in ("task", "monitor", "mode", "host"):
        if run.get(key) is not None:
            tags[key] = str(run[key])[:MAX_TAG_VALUE_LENGTH]
    return tags


def point_bytes(point: Point) -> int:
    """A generous estimate of a point's size in a log_batch request body."""
    return len(point.key) + 80


def batches(points: Sequence[Point], max_points: int = MAX_METRICS_PER_BATCH) -> Iterator[list[Point]]:
    """Cut ``points`` into log_batch-sized requests (≤ 1000 points, well under 1 MB), in order."""
    batch: list[Point] = []
    size = 0
    for point in points:
        cost = point_bytes(point)
        if batch and (len(batch) >= max_points or size + cost > BATCH_BYTES_BUDGET):
            yield batch
            batch, size = [], 0
        batch.append(point)
        size += cost
    if batch:
        yield batch


def param_batches(items: Mapping[str, str]) -> Iterator[list[tuple[str, str]]]:
    """Params or tags in requests of ≤ 100 entries and well under 1 MB."""
    batch: list[tuple[str, str]] = []
    size = 0
    for key, value in items.items():
        cost = len(key) + len(value) + 40
        if batch and (len(batch) >= MAX_PARAMS_TAGS_PER_BATCH or size + cost > BATCH_BYTES_BUDGET):
            yield batch
            batch, size = [], 0
        batch.append((key, value))
        size += cost
    if batch:
        yield batch
