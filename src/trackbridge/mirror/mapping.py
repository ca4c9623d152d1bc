"""The local record → MLflow entities (DESIGN §6), as pure functions with no MLflow import.

Points keep the record's own timestamps, so replaying a record produces the
very same points: MLflow's SQL store keeps one row per (key, timestamp,
step, value) and drops an identical point sent again (a replay after a
crash costs a request, never a duplicate).

Each point belongs to a :class:`Stream` (epoch records, steps.jsonl lines,
system.jsonl samples, metrics.json stages) and has a *mark* in it: the epoch,
else the entry's position in its file. Marks grow within a stream, which is
what lets the cursor say "everything up to mark N is in MLflow" with one
number per stream.
"""

from __future__ import annotations

import logging
import re
from enum import Enum
from typing import Any, Iterator, Mapping, NamedTuple, Sequence, TypeVar

from ..mlflow_tags import MAX_TAG_VALUE_LENGTH, NOTE_TAG, RUN_ID_TAG, VERSION_TAG
from ..record.clock import parse_iso
from ..record.epoch import TIME_KEY, metric_items
from ..record.status import RunStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

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

# Files of the run directory mirrored as artifacts when a run ends (DESIGN §6).
FINAL_ARTIFACTS = ("metrics.json", "run.json", "logs/training.log")
CHECKPOINT_ARTIFACTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt")
CONFIG_YAML = "config.yaml"  # the resolved LightningCLI config, when the run has one
SYSTEM_PREFIX = "system/"  # MLflow's own prefix for system metrics (its System metrics tab)


class Stream(str, Enum):
    """A part of the local record whose entries reach MLflow in order, each with a growing mark.

    The mark is what grows in the file whatever the user logs: the epoch of
    an epoch record, else the entry's position in its file (steps.jsonl
    lines may repeat or go back in ``step``: a user's ``log_metrics`` at any
    step, several lines at one step).
    """

    EPOCH = "epoch"  # metrics.json epochs; mark = epoch
    STEP = "step"  # steps.jsonl lines; mark = line index (0-based)
    SYSTEM = "system"  # system.jsonl samples; mark = line index
    STAGE = "stage"  # metrics.json stages; mark = index in the list
    MEDIA = "media"  # media.jsonl lines; mark = line index

    @property
    def field(self) -> str:
        """The cursor's watermark of this stream."""
        return _FIELDS[self]


_FIELDS = {
    Stream.EPOCH: "last_epoch_mirrored",
    Stream.STEP: "last_step_line_mirrored",
    Stream.SYSTEM: "last_system_line_mirrored",
    Stream.STAGE: "last_stage_mirrored",
    Stream.MEDIA: "last_media_mirrored",
}


class Point(NamedTuple):
    """One metric point: what ``mlflow.entities.Metric`` holds, without importing MLflow."""

    key: str
    value: float
    timestamp: int  # ms since the epoch, from the record
    step: int


class Tracked(NamedTuple):
    """A point with its place in the local record."""

    stream: Stream
    mark: int
    point: Point


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
        if key not in ("step", TIME_KEY) and _is_number(value)
    ]


def system_points(line: Mapping[str, Any]) -> list[Point]:
    """A system.jsonl sample as MLflow's ``system/<name>`` metrics at ``step`` = the sample's step."""
    step = int(line["step"])
    timestamp = iso_to_ms(line[TIME_KEY])
    return [
        Point(clean_key(SYSTEM_PREFIX + key), float(value), timestamp, step)
        for key, value in line.items()
        if key not in ("step", TIME_KEY) and _is_number(value)
    ]


def stage_points(entry: Mapping[str, Any]) -> list[Point]:
    """A metrics.json stage (post-fit validate/test) under its logged names, at step = the last fit epoch."""
    step = int(entry.get("epoch") or 0)
    timestamp = iso_to_ms(entry[TIME_KEY])
    return [
        Point(clean_key(key), float(value), timestamp, step)
        for key, value in (entry.get("metrics") or {}).items()
        if _is_number(value)
    ]


def tracked_epoch(record: Mapping[str, Any]) -> list[Tracked]:
    mark = int(record["epoch"])
    return [Tracked(Stream.EPOCH, mark, p) for p in epoch_points(record)]


def tracked_step(index: int, line: Mapping[str, Any]) -> list[Tracked]:
    return [Tracked(Stream.STEP, index, p) for p in step_points(line)]


def tracked_system(index: int, line: Mapping[str, Any]) -> list[Tracked]:
    return [Tracked(Stream.SYSTEM, index, p) for p in system_points(line)]


def tracked_stage(index: int, entry: Mapping[str, Any]) -> list[Tracked]:
    return [Tracked(Stream.STAGE, index, p) for p in stage_points(entry)]


def _is_number(value: Any) -> bool:
    return value is not None and not isinstance(value, bool) and isinstance(value, (int, float))


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
    """MLflow params of a run: the config's and the logged hyperparameters, the model's, then the tracking config.

    Hyperparameters keep their own (flattened) names, as Lightning's MLflow
    logger shows them; the tracking config's fields follow under their field
    names. A later source never overwrites an earlier one: a clash with a
    different value goes under a prefix (``model.`` or ``trackbridge.``).
    """
    config = dict(run.get("config") or {})
    # the config's hyperparameters, then those logged with logger.log_hyperparams (run.json's
    # "logged_hyperparameters": flat, under their own names, as Lightning's MLFlowLogger logs them)
    hyper = {**(config.pop("hyperparameters", None) or {}), **(run.get("hyperparameters") or {}),
             **(run.get("logged_hyperparameters") or {})}
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


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Any nested mapping as MLflow params: flattened with dots, keys cleaned, values truncated."""
    params: dict[str, str] = {}
    for key, value in flatten(values, prefix):
        name = clean_key(key)
        params.setdefault(name, _param_value(name, value))
    return params


def run_tags(
    run: Mapping[str, Any], version: str, context: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Tags that describe and link the run.

    MLflow's context tags first (``mlflow.user``, ``mlflow.source.*``, as its
    context providers found them when the run started), then task, monitor,
    mode, host, versions and the local run id, then the user's own tags and
    the description (``mlflow.note.content``) from the config.
    """
    config = run.get("config") or {}
    tags = {str(k): str(v) for k, v in (context or {}).items()}
    tags[RUN_ID_TAG] = str(run["run_id"])
    tags[VERSION_TAG] = str(run.get("trackbridge_version") or version)
    for key in ("task", "monitor", "mode", "host"):
        if run.get(key) is not None:
            tags[key] = str(run[key])
    tags.update({str(k): str(v) for k, v in (config.get("tags") or {}).items()})
    if config.get("description"):
        tags[NOTE_TAG] = str(config["description"])
    return {key: value[:MAX_TAG_VALUE_LENGTH] for key, value in tags.items()}


def point_bytes(point: Point) -> int:
    """A generous estimate of a point's size in a log_batch request body."""
    return len(point.key) + 80


def batches(items: Sequence[T], max_points: int = MAX_METRICS_PER_BATCH) -> Iterator[list[T]]:
    """Cut points (or :class:`Tracked` points) into log_batch-sized requests (≤ 1000, well under 1 MB), in order."""
    batch: list[T] = []
    size = 0
    for item in items:
        cost = point_bytes(item.point if isinstance(item, Tracked) else item)  # type: ignore[arg-type]
        if batch and (len(batch) >= max_points or size + cost > BATCH_BYTES_BUDGET):
            yield batch
            batch, size = [], 0
        batch.append(item)
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
