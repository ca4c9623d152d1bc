"""The local run record: ids, the run directory, strict JSON, epoch records, status."""

from .epoch import build_epoch_record, metric_items
from .ids import InvalidRunIdError, new_run_id, validate_run_id
from .jsonio import append_jsonl, dumps_strict, read_json, read_jsonl, to_jsonable, write_json_atomic, write_jsonl_atomic
from .jsonl import JsonlAppender
from .liveness import LivenessJudge, ProcessIdentity, find_dead_runs, iter_runs
from .run_dir import RunDirectory, RunExistsError, RunNotFoundError
from .status import InvalidTransitionError, RunStatus

__all__ = [
    "InvalidRunIdError",
    "InvalidTransitionError",
    "JsonlAppender",
    "LivenessJudge",
    "ProcessIdentity",
    "RunDirectory",
    "RunExistsError",
    "RunNotFoundError",
    "RunStatus",
    "append_jsonl",
    "build_epoch_record",
    "dumps_strict",
    "find_dead_runs",
    "iter_runs",
    "metric_items",
    "new_run_id",
    "read_json",
    "read_jsonl",
    "to_jsonable",
    "validate_run_id",
    "write_json_atomic",
    "write_jsonl_atomic",
]
