"""Replay a local run into MLflow, idempotently: what MLflow lacks is sent, nothing twice.

The cursor says what the live mirror got through; sync does not trust it for
points. It reads MLflow's history of every key and sends exactly the
``(key, step)`` pairs that are missing, so a second sync sends nothing, and a
point MLflow already holds (with another value, after a resume) is never
duplicated. Artifacts pending in the cursor are uploaded, the status is set,
a pending registration is done.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..record.jsonio import read_jsonl
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from .cursor import Cursor, cursor_of
from ..mlflow_tags import ERROR_TAG, MAX_TAG_VALUE_LENGTH
from .mapping import Point, batches, iso_to_ms, param_batches, record_points, run_params, run_tags, mlflow_status
from .uri import mlflow_ui_url, resolve_tracking_uri

log = logging.getLogger(__name__)

FINAL_ARTIFACTS = ("metrics.json", "run.json", "logs/training.log")
CHECKPOINT_ARTIFACTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt")


class SyncError(RuntimeError):
    """A run that cannot be synced as asked (e.g. it is still running)."""


def local_points(
    run_dir: RunDirectory, *, max_epoch: int | None = None, max_step: int | None = None
) -> list[Point]:
    """Every point of the local record (optionally only up to an epoch and a global step)."""
    epochs = [r for r in run_dir.read_metrics() if max_epoch is None or r.get("epoch", 0) <= max_epoch]
    steps = [
        line for line in read_jsonl(run_dir.steps_jsonl)
        if isinstance(line, dict) and "step" in line and (max_step is None or line["step"] <= max_step)
    ]
    return record_points(epochs, steps)


def present_steps(client: Any, mlflow_run_id: str, keys: Iterable[str]) -> dict[str, set[int]]:
    """The steps MLflow holds for each key (one history read per key)."""
    return {key: {m.step for m in client.get_metric_history(mlflow_run_id, key)} for key in sorted(keys)}


def missing_points(local: list[Point], present: Mapping[str, set[int]]) -> list[Point]:
    """Local points whose ``(key, step)`` MLflow lacks; the first of local duplicates wins."""
    seen: set[tuple[str, int]] = set()
    missing = []
    for point in local:
        ident = (point.key, point.step)
        if ident in seen or point.step in present.get(point.key, ()):
            continue
        seen.add(ident)
        missing.append(point)
    return missing


@dataclass
class SyncResult:
    """What one sync did."""

    run_id: str
    mlflow_run_id: str
    url: str
    tracking_uri: str
    created: bool = False
    points_added: int = 0
    artifacts_uploaded: list[str] = field(default_factory=list)
    status: str | None = None
    registered: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.points_added or self.artifacts_uploaded or self.status or self.registered)


class SyncJob:
    """A prepared sync of one run: the MLflow run is found (or created) and the gaps known.

    :attr:`steps` is a list of callables, each one MLflow request or upload,
    so a command line can show a progress bar over them (``len(job.steps)``).
    """

    def __init__(self, run_dir: RunDirectory, tracking_uri: str | None = None, *, experiment: str | None = None) -> None:
        from .client import create_run, ensure_experiment, find_run, make_client

        self.run_dir = run_dir
        run = run_dir.read_run()
        status = RunStatus(run.get("status", "pending"))
        if status in (RunStatus.PENDING, RunStatus.RUNNING):
            raise SyncError(
                f"run {run_dir.run_id!r} is still {status.value}; its live mirror is sending it "
                "(sync it once it has ended)"
            )
        cursor = cursor_of(run)
        config = run.get("config") or {}
        self.tracking_uri = tracking_uri or cursor["tracking_uri"] or resolve_tracking_uri(config.get("tracking_uri"))
        self.experiment = experiment or cursor["experiment"] or config.get("experiment") or "trackbridge"
        self.client = client = make_client(self.tracking_uri)
        self.cursor = Cursor(run_dir)

        experiment_id = ensure_experiment(client, self.experiment, self.tracking_uri)
        known = cursor["run_id"] if cursor["tracking_uri"] == self.tracking_uri else None
        found = find_run(client, known, experiment_id, run_dir.run_id)
        created = found is None
        if found is None:
            from .. import __version__

            started = run.get("started_at") or run.get("created_at")
            found = create_run(
                client, experiment_id, run_dir.run_id, iso_to_ms(started) if started else None,
                run_tags(run, __version__),
            )
        self.mlflow_run_id = mlflow_run_id = found.info.run_id
        self.result = SyncResult(
            run_id=run_dir.run_id,
            mlflow_run_id=mlflow_run_id,
            url=mlflow_ui_url(self.tracking_uri, experiment_id, mlflow_run_id),
            tracking_uri=self.tracking_uri,
            created=created,
        )
        same_run = cursor["run_id"] == mlflow_run_id
        self.cursor.update(
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            experiment_id=experiment_id,
            run_id=mlflow_run_id,
            url=self.result.url,
            **({} if same_run else {"last_epoch_mirrored": None, "last_step_mirrored": None,
                                    "params_mirrored": False, "status_mirrored": None}),
        )

        self.steps: list[Callable[[], None]] = []
        # params MLflow lacks (a param cannot change once set, so those present are left)
        have = found.data.params
        params = {k: v for k, v in run_params(run).items() if k not in have}
        for batch in param_batches(params):
            self.steps.append(lambda batch=batch: self._log_params(batch))
        # points MLflow lacks
        local = local_points(run_dir)
        present = present_steps(client, mlflow_run_id, {p.key for p in local})
        self.max_epoch = max((r["epoch"] for r in run_dir.read_metrics()), default=None)
        steps = [line["step"] for line in read_jsonl(run_dir.steps_jsonl) if isinstance(line, dict) and "step" in line]
        self.max_step = max(steps, default=None)
        for batch in batches(missing_points(local, present)):
            self.steps.append(lambda batch=batch: self._log_points(batch))
        # artifacts: pending ones, and the whole final set when MLflow never saw the end
        target = mlflow_status(status)
        uploads = [p for p in cursor["artifacts_pending"]]
        if created or found.info.status != target or not same_run:
            mirror_checkpoints = config.get("mirror_checkpoints", "best_last") != "none"
            uploads += list(FINAL_ARTIFACTS) + (list(CHECKPOINT_ARTIFACTS) if mirror_checkpoints else [])
        for relpath in dict.fromkeys(uploads):
            self.steps.append(lambda relpath=relpath: self._upload(relpath))
        if found.info.status != target:
            end = run.get("completed_at")
            error = run.get("error")
            self.steps.append(lambda: self._set_status(target, iso_to_ms(end) if end else None, error))
        pending = cursor["registration_pending"]
        if pending and status is RunStatus.COMPLETED:
            self.steps.append(lambda: self._register(pending["name"], pending.get("alias") or "champion"))
        self.steps.append(self._advance_cursor)

    # each step is one MLflow request (or a local cursor write)
    def _log_params(self, batch: list[tuple[str, str]]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.mlflow_run_id, params=[Param(k, v) for k, v in batch])

    def _log_points(self, batch: list[Point]) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(
            self.mlflow_run_id, metrics=[Metric(p.key, p.value, p.timestamp, p.step) for p in batch]
        )
        self.result.points_added += len(batch)

    def _upload(self, relpath: str) -> None:
        source = self.run_dir.path / relpath
        if source.is_file():
            self.client.log_artifact(self.mlflow_run_id, str(source), os.path.dirname(relpath) or None)
            self.result.artifacts_uploaded.append(relpath)
        self.cursor.remove_pending([relpath])

    def _set_status(self, status: str, end_ms: int | None, error: str | None = None) -> None:
        if error:
            self.client.set_tag(self.mlflow_run_id, ERROR_TAG, error[:MAX_TAG_VALUE_LENGTH])
        self.client.set_terminated(self.mlflow_run_id, status=status, end_time=end_ms)
        self.result.status = status
        self.cursor.update(status_mirrored=status)

    def _register(self, name: str, alias: str) -> None:
        from .registry import register_checkpoint, registration_summary

        self.result.registered = register_checkpoint(self.client, self.run_dir, self.mlflow_run_id, name, alias)
        self.cursor.update(registration_pending=None, registered=registration_summary(self.result.registered))

    def _advance_cursor(self) -> None:
        self.cursor.update(params_mirrored=True)
        self.cursor.advance(epoch=self.max_epoch, step=self.max_step)

    def run(self) -> SyncResult:
        for step in self.steps:
            step()
        return self.result


def sync_run(
    run_dir: RunDirectory, tracking_uri: str | None = None, *, experiment: str | None = None
) -> SyncResult:
    """Replay whatever MLflow lacks of ``run_dir`` into its MLflow run (created if it never existed).

    ``tracking_uri`` defaults to the cursor's, then the run's config, then
    ``$MLFLOW_TRACKING_URI``, then the embedded store. Idempotent: a second
    call adds no metric point. Points whose value is ``null`` in the record
    (NaN or ±Inf during training) are skipped, live and in sync alike.
    """
    return SyncJob(run_dir, tracking_uri, experiment=experiment).run()
