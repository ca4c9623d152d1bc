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

        def apply(run: dict[str, Any]) -> None:
            cursor = cursor_of(run)
            cursor.update(fields)
            cursor["updated_at"] = utc_now_iso()
            run[FIELD] = cursor

        return cursor_of(self.run_dir.update_run(apply))

    def advance(self, *, epoch: int | None = None, step: int | None = None) -> dict[str, Any]:
        """Move the watermarks forward (never back): points up to here reached MLflow."""

        def apply(run: dict[str, Any]) -> None:
            cursor = cursor_of(run)
            for name, value in (("last_epoch_mirrored", epoch), ("last_step_mirrored", step)):
                if value is not None and (cursor[name] is None or value > cursor[name]):
                    cursor[name] = value
            cursor["updated_at"] = utc_now_iso()
            run[FIELD] = cursor

        return cursor_of(self.run_dir.update_run(apply))

    def add_pending(self, paths: Iterable[str]) -> None:
        self._edit_pending(add=paths)

    def remove_pending(self, paths: Iterable[str]) -> None:
        self._edit_pending(remove=paths)

    def _edit_pending(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        add, remove = list(add), set(remove)

        def apply(run: dict[str, Any]) -> None:
            cursor = cursor_of(run)
            pending = [p for p in cursor["artifacts_pending"] if p not in remove]
            pending += [p for p in add if p not in pending]
            cursor["artifacts_pending"] = pending
            cursor["updated_at"] = utc_now_iso()
            run[FIELD] = cursor

        self.run_dir.update_run(apply)
