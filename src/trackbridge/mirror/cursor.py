"""The mirror's cursor: run.json's ``"mlflow"`` field, which says exactly what reached MLflow.

::

    "mlflow": {
      "tracking_uri": "http://127.0.0.1:5000",   # resolved when the run directory is created
      "experiment": "trackbridge", "experiment_id": "1",
      "run_id": "<MLflow run id>", "url": "<MLflow UI page>",
      "adopted": false,               # true: a run the user (or MLFLOW_RUN_ID) started; its status is theirs
      "last_epoch_mirrored": 3,       # every metrics.json epoch point up to this epoch is in MLflow
      "last_step_line_mirrored": 149, # every point of steps.jsonl's lines 0..149 too
      "last_system_line_mirrored": 12,  # every system.jsonl sample of lines 0..12
      "last_stage_mirrored": 0,       # every metrics.json stage up to this index
      "last_media_mirrored": 5,       # every media.jsonl line up to this index (0-based)
      "params_mirrored": true, "inputs_mirrored": true,
      "datasets": [...],              # the datasets of the run (mlflow.log_inputs), kept for sync
      "context_tags": {...},          # mlflow.user, mlflow.source.* as found when the run started
      "artifacts_pending": ["checkpoints/best.ckpt"],   # changed locally, not uploaded yet
      "status_mirrored": "RUNNING",   # the MLflow status last set
      "refused": {"points": 24, "media": 0, "operations": ["points"],
                  "message": "HTTP 403 PERMISSION_DENIED: ...", "at": "..."},   # or null
      "registration_pending": null,   # {"name", "alias"} while a registration waits for sync
      "registered": {"name", "version", "alias", "alias_moved", "model_uri"},  # the last one done
      "module_class": "pkg.module.ClassName",           # what best.ckpt loads into
      "outages": 0, "updated_at": "..."
    }

The watermarks never run ahead of MLflow: a point is counted only once MLflow
accepted the request that carried it, and a refused point holds its stream's
watermark below it for the rest of the run, so ``trackbridge sync`` sends it
again. They may lag behind (a crash loses the last seconds of cursor writes);
sync then resends points MLflow already holds, which its SQL store drops as
identical.

Only the mirror (worker, sync, registry) writes it, always through
:meth:`RunDirectory.update_run`, which serialises writers in the process.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..record.clock import utc_now_iso
from ..record.run_dir import RunDirectory
from .mapping import Stream

FIELD = "mlflow"

EMPTY: Mapping[str, Any] = {
    "tracking_uri": None,
    "experiment": None,
    "experiment_id": None,
    "run_id": None,
    "url": None,
    "adopted": False,
    **{stream.field: None for stream in Stream},
    "params_mirrored": False,
    "inputs_mirrored": False,
    "datasets": None,
    "context_tags": None,
    "artifacts_pending": [],
    "status_mirrored": None,
    "refused": None,
    "registration_pending": None,
    "registered": None,
    "module_class": None,
    "outages": 0,
    "updated_at": None,
}


def cursor_of(run: Mapping[str, Any]) -> dict[str, Any]:
    """The cursor of a run.json record, with every field present (a copy)."""
    stored = run.get(FIELD) or {}
    cursor = {**EMPTY, **stored}
    cursor["artifacts_pending"] = list(cursor.get("artifacts_pending") or [])
    return cursor


def initial_cursor(
    tracking_uri: str, experiment: str | None, experiment_id: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """The cursor of a new run: where it will be mirrored, known before any connection.

    ``run_id`` is an MLflow run to adopt (``MLFLOW_RUN_ID``); its lifecycle stays with its owner.
    """
    return {**EMPTY, "tracking_uri": tracking_uri, "experiment": experiment, "experiment_id": experiment_id,
            "run_id": run_id, "adopted": run_id is not None, "updated_at": utc_now_iso()}


def watermark(cursor: Mapping[str, Any], stream: Stream) -> int | None:
    return cursor.get(stream.field)


class Cursor:
    """Reads and edits the cursor of one run directory."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir

    def read(self) -> dict[str, Any]:
        return cursor_of(self.run_dir.read_run())

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the cursor; returns the new cursor."""
        return self.apply(fields)

    def advance(self, marks: Mapping[Stream, int | None]) -> dict[str, Any]:
        """Move the watermarks forward (never back): points up to here reached MLflow."""
        return self.apply(marks=marks)

    def add_pending(self, paths: Iterable[str]) -> dict[str, Any]:
        return self.apply(add=paths)

    def remove_pending(self, paths: Iterable[str]) -> dict[str, Any]:
        return self.apply(remove=paths)

    def apply(
        self,
        fields: Mapping[str, Any] | None = None,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        marks: Mapping[Stream, int | None] | None = None,
        refused: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Every kind of change at once, in one run.json write: fields, pending paths, watermarks, refusals."""
        add, remove = list(add), set(remove)

        def edit(run: dict[str, Any]) -> None:
            cursor = cursor_of(run)
            cursor.update(fields or {})
            pending = [p for p in cursor["artifacts_pending"] if p not in remove]
            cursor["artifacts_pending"] = pending + [p for p in dict.fromkeys(add) if p not in pending]
            for stream, value in (marks or {}).items():
                current = cursor.get(stream.field)
                if value is not None and (current is None or value > current):
                    cursor[stream.field] = value
            if refused:
                cursor["refused"] = merge_refused(cursor.get("refused"), refused)
            cursor["updated_at"] = utc_now_iso()
            run[FIELD] = cursor

        return cursor_of(self.run_dir.update_run(edit))


def merge_refused(stored: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Add the counts of ``new`` to ``stored``; the newest message wins."""
    merged = dict(stored or {"points": 0, "media": 0, "operations": []})
    merged["points"] = int(merged.get("points") or 0) + int(new.get("points") or 0)
    merged["media"] = int(merged.get("media") or 0) + int(new.get("media") or 0)
    merged["operations"] = list(dict.fromkeys([*(merged.get("operations") or []), *(new.get("operations") or [])]))
    merged["message"] = new.get("message") or merged.get("message")
    merged["at"] = utc_now_iso()
    return merged


class CursorBuffer:
    """Cursor changes gathered in memory and written in one go.

    Each run.json write is an fsync; the worker would otherwise pay one per
    upload or batch, several of them inside the final flush that training
    waits for. A crash loses at most the changes of the last interval, which
    sync recovers from: it resends past the (then lagging) watermarks.
    """

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.written_at = 0.0
        self._fields: dict[str, Any] = {}
        self._add: dict[str, None] = {}
        self._remove: set[str] = set()
        self._marks: dict[Stream, int] = {}
        self._refused: dict[str, Any] | None = None

    def set(self, **fields: Any) -> None:
        self._fields.update(fields)

    def add_pending(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._remove.discard(path)
            self._add[path] = None

    def remove_pending(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._add.pop(path, None)
            self._remove.add(path)

    def mark(self, stream: Stream, value: int) -> None:
        """Raise the watermark of ``stream`` to ``value``."""
        self._marks[stream] = max(self._marks.get(stream, value), value)

    def refuse(self, operation: str, message: str, *, points: int = 0, media: int = 0) -> None:
        """Count a refusal of MLflow (what it carried, MLflow's message)."""
        new = {"points": points, "media": media, "operations": [operation], "message": message}
        self._refused = new if self._refused is None else {**merge_refused(self._refused, new)}

    @property
    def dirty(self) -> bool:
        return bool(self._fields or self._add or self._remove or self._marks or self._refused)

    def flush(self) -> None:
        if not self.dirty:
            return
        fields, add, remove, marks, refused = self._fields, list(self._add), self._remove, self._marks, self._refused
        self._fields, self._add, self._remove, self._marks, self._refused = {}, {}, set(), {}, None
        self.cursor.apply(fields, add=add, remove=remove, marks=marks, refused=refused)
