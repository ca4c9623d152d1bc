"""RunDirectory: every path of a run (DESIGN §2) and the one owner of run.json writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from .clock import utc_now_iso
from .ids import validate_run_id
from .jsonio import read_json, write_json_atomic
from .locks import RunLock, lock_for
from .status import RunStatus, check_transition


class RunExistsError(FileExistsError):
    """Raised when creating a run whose id is already used (and not resuming)."""


class RunNotFoundError(FileNotFoundError):
    """Raised when a run id has no run directory under the runs root."""


class RunDirectory:
    """The folder ``<runs_root>/<run_id>/`` and the files in it.

    The run id is validated before any path is built, so a RunDirectory can
    never point outside its runs root.
    """

    RUN_JSON = "run.json"
    METRICS_JSON = "metrics.json"
    EVENTS_JSONL = "events.jsonl"
    STEPS_JSONL = "steps.jsonl"
    STOP_REQUEST = "stop-request.json"

    def __init__(self, runs_root: str | os.PathLike[str], run_id: str) -> None:
        self.run_id = validate_run_id(run_id)
        self.runs_root = Path(runs_root)
        self.path = self.runs_root / self.run_id

    @classmethod
    def from_file(cls, file_in_run_dir: str | os.PathLike[str]) -> "RunDirectory":
        """The run directory that holds ``file_in_run_dir`` (e.g. a run.json path)."""
        path = Path(file_in_run_dir).absolute()
        folder = path.parent.parent if path.parent.name in ("logs", "checkpoints") else path.parent
        return cls(folder.parent, folder.name)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # -- paths -------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / self.RUN_JSON

    @property
    def metrics_json(self) -> Path:
        return self.path / self.METRICS_JSON

    @property
    def events_jsonl(self) -> Path:
        return self.path / self.EVENTS_JSONL

    @property
    def steps_jsonl(self) -> Path:
        return self.path / self.STEPS_JSONL

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints_dir / "best.ckpt"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints_dir / "last.ckpt"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def training_log(self) -> Path:
        return self.logs_dir / "training.log"

    @property
    def stop_request(self) -> Path:
        return self.path / self.STOP_REQUEST

    @property
    def media_dir(self) -> Path:
        return self.path / "media"

    @property
    def media_jsonl(self) -> Path:
        return self.path / "media.jsonl"

    @property
    def system_jsonl(self) -> Path:
        return self.path / "system.jsonl"

    def exists(self) -> bool:
        return self.run_json.is_file()

    def lock(self) -> RunLock:
        """The run's writer lock (threads and processes): hold it to change the record consistently."""
        return lock_for(self.path)

    # -- life of the folder ------------------------------------------------
    def ensure_layout(self) -> None:
        """Create the folder and its sub-folders (idempotent)."""
        for folder in (self.path, self.checkpoints_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def create(self, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create the run as ``pending``; refuses an id that is already taken.

        ``fields`` usually carry the creating process's identity
        (:meth:`~trackbridge.record.liveness.ProcessIdentity.as_fields`), so
        its heartbeat counts from this moment.
        """
        if self.exists():
            raise RunExistsError(
                f"run {self.run_id!r} already exists in {self.runs_root}; "
                "pick another --run-id, or resume it with --resume"
            )
        self.ensure_layout()
        now = utc_now_iso()
        record: dict[str, Any] = {
            "run_id": self.run_id,
            "status": RunStatus.PENDING.value,
            "created_at": now,
            "started_at": None,
            "completed_at": None,
            "epochs_done": 0,
            "max_epochs": None,
            "best_epoch": None,
            "best_score": None,
            "final_metrics": None,
            "error": None,
            "host": None,
            "boot_id": None,
            "pid_namespace": None,
            "pid": None,
            "pid_started_at": None,
            "heartbeat_at": now,
            "mlflow": None,
        }
        record.update(fields or {})
        with self.lock():
            if self.exists():  # another process took the id meanwhile
                raise RunExistsError(f"run {self.run_id!r} already exists in {self.runs_root}; pick another --run-id")
            write_json_atomic(self.run_json, record)
        return record

    # -- run.json ----------------------------------------------------------
    def read_run(self) -> dict[str, Any]:
        try:
            return read_json(self.run_json)
        except FileNotFoundError:
            raise RunNotFoundError(
                f"no run {self.run_id!r} in {self.runs_root} (no {self.RUN_JSON}); "
                "`trackbridge runs` lists the runs there"
            ) from None

    def update_run(
        self,
        changes: Mapping[str, Any] | Callable[[dict[str, Any]], None] | None = None,
        *,
        fsync: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Read-modify-write run.json under the run's lock; returns the new content.

        ``changes`` is a mapping merged at the top level, or a function that
        edits the record in place (for nested fields such as the MLflow cursor).
        ``fsync=False`` leaves the disk sync to the caller (the record writer
        syncs after its wave's renames).
        """
        with self.lock():
            record = self.read_run()
            if callable(changes):
                changes(record)
            elif changes:
                record.update(changes)
            record.update(fields)
            write_json_atomic(self.run_json, record, fsync=fsync)
            return record

    def set_status(self, status: RunStatus | str, **fields: Any) -> dict[str, Any]:
        """Move the run to ``status``; the one place that enforces the lifecycle."""

        def apply(record: dict[str, Any]) -> None:
            new = check_transition(record.get("status", RunStatus.PENDING), status)
            now = utc_now_iso()
            if new is RunStatus.RUNNING:
                record.setdefault("started_at", None)
                if record["started_at"] is None:
                    record["started_at"] = now
                else:
                    record["resumed_at"] = now
                record["completed_at"] = None
                record["error"] = None
                record["heartbeat_at"] = now
            elif new.is_terminal:
                record["completed_at"] = now
            record["status"] = new.value
            record.update(fields)

        return self.update_run(apply)

    # -- metrics.json ------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        try:
            return list(read_json(self.metrics_json).get("epochs", []))
        except FileNotFoundError:
            return []

    def write_metrics(self, records: list[Mapping[str, Any]]) -> None:
        write_json_atomic(self.metrics_json, {"epochs": list(records)})

    # -- stop requests -----------------------------------------------------
    def request_stop(self, requested_by: str = "user") -> None:
        """Ask a running training to stop at its next batch (any process may call this)."""
        write_json_atomic(self.stop_request, {"requested_at": utc_now_iso(), "by": requested_by})

    def stop_requested(self) -> bool:
        return self.stop_request.exists()

    def clear_stop_request(self) -> None:
        try:
            self.stop_request.unlink()
        except FileNotFoundError:
            pass
