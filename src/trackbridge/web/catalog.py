"""RunCatalog: where the live API finds a run — its directory when readable, else its MLflow run.

Run ids are validated before any path is built, and a run directory must
resolve inside the runs root (a symlink out of it is not followed), so no
request can read a byte outside the runs root. The file wins whenever the
run directory is readable; MLflow is asked only for runs this server cannot
read (another host, no shared disk), when a tracking URI is configured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ..events.lifecycle import mark_dead_runs
from ..events.sources import (
    FileEventSource,
    MlflowEventSource,
    SourceUnavailableError,
    find_mlflow_run,
    mlflow_run_status,
)
from ..events.hub import SourceFactory
from ..record.liveness import iter_runs
from ..record.run_dir import RunDirectory, RunNotFoundError
from ..record.status import InvalidTransitionError, RunStatus
from .settings import WebSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Fields of run.json listed for each run by GET /api/runs.
SUMMARY_FIELDS = (
    "run_id", "task", "status", "epochs_done", "max_epochs", "best_epoch", "best_score",
    "monitor", "mode", "created_at", "started_at", "completed_at", "heartbeat_at", "error",
)
# How long "no such run in MLflow" is remembered, so unknown ids do not hammer the tracking server.
_MISS_TTL_S = 5.0


class RunConflictError(ValueError):
    """The request does not fit the run's state (e.g. stopping a finished run)."""


class RunCatalog:
    """Runs of one runs root (and, for the others, one MLflow tracking URI)."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.runs_root = settings.runs_root
        self._root_real = os.path.realpath(settings.runs_root)
        self._client: "MlflowClient | None" = None
        self._mlflow_sources: dict[str, MlflowEventSource] = {}
        self._misses: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last_sweep = -float("inf")
        self._sweep_lock = threading.Lock()

    # -- the local record --------------------------------------------------
    def local(self, run_id: str) -> RunDirectory | None:
        """The run's directory if this server can read its run.json, else None.

        Raises InvalidRunIdError for an id that is not a run id.
        """
        run_dir = RunDirectory(self.runs_root, run_id)  # validates the id first
        real = os.path.realpath(run_dir.path)
        if os.path.dirname(real) != self._root_real:
            return None  # a symlink that leads out of the runs root
        return run_dir if os.access(run_dir.run_json, os.R_OK) and run_dir.run_json.is_file() else None

    def list_runs(self) -> list[dict[str, Any]]:
        """A summary of every readable run, newest first (dead runs are marked failed first)."""
        self.sweep_dead_runs()
        items = []
        for run_dir in iter_runs(self.runs_root):
            if self.local(run_dir.run_id) is None:
                continue
            try:
                run = run_dir.read_run()
            except (OSError, ValueError):
                continue  # being replaced right now, or not a run.json we can read
            if isinstance(run, dict):
                items.append(summary(run, run_dir.run_id))
        items.sort(key=lambda item: (str(item.get("created_at") or ""), item["run_id"]), reverse=True)
        return items

    def run(self, run_id: str) -> dict[str, Any]:
        """run.json (plus ``mlflow_url``), or what MLflow knows of a run not readable here."""
        run_dir = self.local(run_id)
        if run_dir is not None:
            try:
                run = run_dir.read_run()
            except (OSError, ValueError) as exc:
                raise RunNotFoundError(f"run {run_id!r} cannot be read: {type(exc).__name__}") from None
            if not isinstance(run, dict):
                raise RunNotFoundError(f"run {run_id!r} has no valid run.json")
            return {**run, "mlflow_url": _mlflow_url(run), "last_event_id": _last_event_id(run_dir)}
        source = self._mlflow_source(run_id)
        mlflow_run = source.run()
        records = source.epoch_records()
        return {
            "run_id": run_id,
            "status": mlflow_run_status(mlflow_run),
            "epochs_done": records[-1]["epoch"] if records else 0,
            "source": "mlflow",
            "mlflow": {"run_id": mlflow_run.info.run_id, "experiment_id": mlflow_run.info.experiment_id},
            "mlflow_url": self._mlflow_ui_url(mlflow_run),
        }

    def metrics(self, run_id: str) -> dict[str, Any]:
        """metrics.json: ``{"epochs": [...]}`` (from MLflow's histories for a run not readable here)."""
        run_dir = self.local(run_id)
        if run_dir is not None:
            # The event id first: an epoch's record is written before its epoch_end event,
            # so these epochs hold every epoch_end up to this id (a stream can go on from it).
            last_event_id = _last_event_id(run_dir)
            try:
                return {"epochs": run_dir.read_metrics(), "last_event_id": last_event_id}
            except (OSError, ValueError, AttributeError):
                return {"epochs": [], "last_event_id": last_event_id}  # not written yet, or being replaced
        source = self._mlflow_source(run_id)
        events = source.read()
        return {"epochs": source.epoch_records(), "last_event_id": events[-1]["id"] if events else 0}

    def request_stop(self, run_id: str, requested_by: str) -> dict[str, Any]:
        """Ask a live run to stop at its next batch (writes the stop-request file)."""
        run_dir = self.local(run_id)
        if run_dir is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in this server's runs root; a run can be stopped only "
                "where its run directory is readable"
            )
        status = run_dir.read_run().get("status")
        if status not in (RunStatus.PENDING.value, RunStatus.RUNNING.value):
            raise RunConflictError(f"run {run_id!r} is already {status}; there is nothing to stop")
        run_dir.request_stop(requested_by=requested_by)
        return {"run_id": run_id, "status": status, "stop_requested": True}

    # -- events --------------------------------------------------------------
    def event_source(self, run_id: str) -> SourceFactory:
        """A factory of event sources for the run: its events.jsonl, else its MLflow run.

        Raises RunNotFoundError when neither knows the run.
        """
        run_dir = self.local(run_id)
        if run_dir is not None:
            interval = self.settings.poll_interval_s
            return lambda: FileEventSource(run_dir, poll_interval_s=interval)
        source = self._mlflow_source(run_id)
        return lambda: source  # thread-safe and cached: shared by the watcher and readers

    def sweep_dead_runs(self) -> None:
        """Mark runs whose process died ``failed`` — at most once per ``dead_run_check_s``."""
        now = time.monotonic()
        if now - self._last_sweep < self.settings.dead_run_check_s or not self._sweep_lock.acquire(False):
            return
        try:
            self._last_sweep = now
            mark_dead_runs(self.runs_root)
        except (OSError, ValueError, InvalidTransitionError) as exc:  # read-only root, a race with the run
            log.warning("could not mark dead runs in %s: %s", self.runs_root, exc)
        finally:
            self._sweep_lock.release()

    # -- MLflow ------------------------------------------------------------------
    def _mlflow_source(self, run_id: str) -> MlflowEventSource:
        if self.settings.tracking_uri is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.runs_root}")
        with self._lock:
            source = self._mlflow_sources.get(run_id)
            missed_at = self._misses.get(run_id)
        if source is not None:
            return source
        if missed_at is not None and time.monotonic() - missed_at < _MISS_TTL_S:
            raise RunNotFoundError(f"no run {run_id!r} in {self.runs_root} nor in MLflow")
        client = self._mlflow_client()
        found = find_mlflow_run(client, run_id)
        if found is None:
            with self._lock:
                self._misses[run_id] = time.monotonic()
            raise RunNotFoundError(f"no run {run_id!r} in {self.runs_root} nor in MLflow")
        source = MlflowEventSource(
            client, found.info.run_id, run_id, poll_interval_s=self.settings.mlflow_poll_interval_s
        )
        with self._lock:
            return self._mlflow_sources.setdefault(run_id, source)

    def _mlflow_client(self) -> "MlflowClient":
        with self._lock:
            if self._client is None:
                try:
                    from ..mirror.client import make_client
                except ImportError as exc:  # mlflow not installed
                    raise SourceUnavailableError(f"MLflow is not available: {exc}") from exc
                self._client = make_client(self.settings.tracking_uri)  # type: ignore[arg-type]
            return self._client

    def _mlflow_ui_url(self, mlflow_run: Any) -> str:
        from ..mirror.uri import mlflow_ui_url

        return mlflow_ui_url(self.settings.tracking_uri, mlflow_run.info.experiment_id, mlflow_run.info.run_id)


def _last_event_id(run_dir: RunDirectory) -> int:
    try:
        return FileEventSource(run_dir).last_id()
    except OSError:
        return 0


def summary(run: dict[str, Any], run_id: str) -> dict[str, Any]:
    """One item of GET /api/runs: the run's main fields and its MLflow UI link."""
    item = {key: run.get(key) for key in SUMMARY_FIELDS}
    item["run_id"] = run.get("run_id") or run_id
    item["mlflow_url"] = _mlflow_url(run)
    return item


def _mlflow_url(run: dict[str, Any]) -> str | None:
    mlflow = run.get("mlflow")
    url = mlflow.get("url") if isinstance(mlflow, dict) else None
    return url if isinstance(url, str) else None
