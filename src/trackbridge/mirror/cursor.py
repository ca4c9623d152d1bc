"""The mirror's cursor: run.json's ``"mlflow"`` field, which says exactly what reached MLflow.

::

    "mlflow": {
      "tracking_uri": "http://127.0.0.1:5000", "experiment": "trackbridge",
      "experiment_id": "1", "run_id": "<MLflow run id>", "url": "<MLflow UI page>",
      "last_epoch_mirrored": 3,       # every epoch point up to this epoch is in MLflow
      "last_step_mirrored": 149,      # every steps.jsonl point up to this global step too
      "params_mirrored": true,
      "artifacts_pending": ["checkpoints/best.ckpt"],   # changed locally, not uploaded yet
      "status_mirrored": "RUNNING",   # the MLflow status last set
      "registration_pending": null,   # {"name", "alias"} while a registration waits for sync
      "registered": {"name", "version", "alias", "alias_moved", "model_uri"},  # the last one done
      "module_class": "pkg.module.ClassName",           # what best.ckpt loads into
      "outages": 0, "updated_at": "..."
    }

Only the mirror (worker, sync, registry) writes it, always through
:meth:`RunDirectory.update_run`, which serialises writers in the process.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..record.clock import utc_now_iso
from ..record.run_dir import RunDirectory

FIELD = "mlflow"

EMPTY: Mapping[str, Any] = {
    "tracking_uri": None,
    "experiment": None,
    "experiment_id": None,
    "run_id": None,
    "url": None,
    "last_epoch_mirrored": None,
    "last_step_mirrored": None,
    "params_mirrored": False,
    "artifacts_pending": [],
    "status_mirrored": None,
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


class Cursor:
    """Reads and edits the cursor of one run directory."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir

    def read(self) -> dict[str, Any]:
        return cursor_of(self.run_dir.read_run())

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the cursor; returns the new cursor."""
        return self.apply(fields)

    def advance(self, *, epoch: int | None = None, step: int | None = None) -> dict[str, Any]:
        """Move the watermarks forward (never back): points up to here reached MLflow."""
        return self.apply(epoch=epoch, step=step)

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
        epoch: int | None = None,
        step: int | None = None,
    ) -> dict[str, Any]:
        """Every kind of change at once, in one run.json write: fields, pending paths, watermarks."""
        add, remove = list(add), set(remove)

        def edit(run: dict[str, Any]) -> None:
            cursor = cursor_of(run)
            cursor.update(fields or {})
            pending = [p for p in cursor["artifacts_pending"] if p not in remove]
            cursor["artifacts_pending"] = pending + [p for p in dict.fromkeys(add) if p not in pending]
            for name, value in (("last_epoch_mirrored", epoch), ("last_step_mirrored", step)):
                if value is not None and (cursor[name] is None or value > cursor[name]):
                    cursor[name] = value
            cursor["updated_at"] = utc_now_iso()
            run[FIELD] = cursor

        return cursor_of(self.run_dir.update_run(edit))


class CursorBuffer:
    """Cursor changes gathered in memory and written in one go.

    Each run.json write is an fsync; the worker would otherwise pay one per
    upload or batch, several of them inside the final flush that training
    waits for. A crash loses at most the changes of the last interval, which
    sync recovers from: it compares with MLflow itself.
    """

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.written_at = 0.0
        self._fields: dict[str, Any] = {}
        self._add: dict[str, None] = {}
        self._remove: set[str] = set()
        self._marks: dict[str, int] = {}

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

    def mark(self, kind: str, value: int) -> None:
        """Raise the ``"epoch"`` or ``"step"`` watermark to ``value``."""
        self._marks[kind] = max(self._marks.get(kind, value), value)

    @property
    def dirty(self) -> bool:
        return bool(self._fields or self._add or self._remove or self._marks)

    def flush(self) -> None:
        if not self.dirty:
            return
        fields, add, remove, marks = self._fields, list(self._add), self._remove, self._marks
        self._fields, self._add, self._remove, self._marks = {}, {}, set(), {}
        self.cursor.apply(fields, add=add, remove=remove, epoch=marks.get("epoch"), step=marks.get("step"))
