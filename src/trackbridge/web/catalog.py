"""RunCatalog: where the live API finds a run — its directory when readable, else its MLflow run.

Run ids are validated before any path is built, and every file is opened
through :class:`~trackbridge.web.files.RunFiles`, which follows no symlink
below the runs root, so no request can read a byte outside it. The file wins
whenever the run directory is readable; MLflow is asked only for runs this
server cannot read (another host, no shared disk), when a tracking URI is
configured.

Reads only: a run whose process died without reporting is reported
``failed`` (its ``error`` says why) by a derived view — one
:class:`~trackbridge.record.liveness.LivenessJudge` per catalog, judging
run.json and its mtime — and never written; closing such a run's record is
the command line's job (``trackbridge runs``).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable

from ..events.hub import SourceFactory
from ..events.sources import (
    FileEventSource,
    MlflowEventSource,
    SourceUnavailableError,
    find_mlflow_run,
    mlflow_run_status,
)
from ..mirror.media import IMAGES_DIR, media_index
from ..record.liveness import LivenessJudge
from ..record.run_dir import RunDirectory, RunNotFoundError
from ..record.status import RunStatus
from .files import FileInfo, RunFiles, UnsafePathError, split_relative
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
_LIVE = (RunStatus.PENDING.value, RunStatus.RUNNING.value)


class RunConflictError(ValueError):
    """The request does not fit the run's state (e.g. stopping a finished run)."""


class RunCatalog:
    """Runs of one runs root (and, for the others, one MLflow tracking URI)."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.runs_root = settings.runs_root
        self.files = RunFiles(settings.runs_root)
        self.judge = LivenessJudge(settings.stale_after_s, remember=True)
        self._client: "MlflowClient | None" = None
        self._mlflow_sources: dict[str, MlflowEventSource] = {}
        self._misses: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- the local record --------------------------------------------------
    def local(self, run_id: str) -> RunDirectory | None:
        """The run's directory if this server can read its run.json, else None.

        Raises InvalidRunIdError for an id that is not a run id, UnsafePathError
        when the run directory or its run.json is a symlink.
        """
        run_dir = RunDirectory(self.runs_root, run_id)  # validates the id first
        try:
            self.files.open(run_id, RunDirectory.RUN_JSON).close()
        except UnsafePathError:
            raise
        except OSError:  # not there, or not readable by this server's user
            return None
        return run_dir

    def read_run(self, run_id: str) -> dict[str, Any]:
        """run.json as the API reports it: a live run whose process died reads ``failed`` (derived)."""
        try:
            run, info = self.files.read_json(run_id, RunDirectory.RUN_JSON)
        except (UnsafePathError, FileNotFoundError):
            raise
        except (OSError, ValueError) as exc:
            raise RunNotFoundError(f"run {run_id!r} cannot be read: {type(exc).__name__}") from None
        if not isinstance(run, dict):
            raise RunNotFoundError(f"run {run_id!r} has no valid run.json")
        return self._derived(run, info.mtime)

    def _derived(self, run: dict[str, Any], mtime: float | None) -> dict[str, Any]:
        if run.get("status") not in _LIVE:
            self.judge.death_reason(run, mtime=mtime)  # lets the judge forget a finished run
            return run
        reason = self.judge.death_reason(run, mtime=mtime)
        if reason is None:
            return run
        return {**run, "status": RunStatus.FAILED.value, "error": reason, "status_derived": True}

    def death_reason(self, run_id: str) -> str | None:
        """Why the run's process is judged dead (None while it may live, or when it ended)."""
        try:
            run = self.read_run(run_id)
        except (OSError, ValueError):
            return None
        return run.get("error") if run.get("status_derived") else None

    def list_runs(self, readable: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """A summary of every readable run (the ones ``readable`` admits), newest first."""
        items = []
        for run_id in self.files.run_ids():
            try:
                run = self.read_run(run_id)
            except (OSError, ValueError):
                continue  # no run.json, a symlink, being replaced right now, or not JSON
            if readable is None or readable(run):
                items.append(summary(run, run_id))
        items.sort(key=lambda item: (str(item.get("created_at") or ""), item["run_id"]), reverse=True)
        return items

    def run(self, run_id: str) -> dict[str, Any]:
        """run.json (plus ``mlflow_url``), or what MLflow knows of a run not readable here."""
        if self.local(run_id) is not None:
            run = self.read_run(run_id)
            return {**run, "mlflow_url": _mlflow_url(run), "last_event_id": self._last_event_id(run_id)}
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
        """metrics.json: ``{"epochs": [...], "stages": [...]}`` (from MLflow's histories for a run not readable here)."""
        if self.local(run_id) is not None:
            # The event id first: an epoch's record is written before its epoch_end event,
            # so these epochs hold every epoch_end up to this id (a stream can go on from it).
            last_event_id = self._last_event_id(run_id)
            try:
                data, _ = self.files.read_json(run_id, RunDirectory.METRICS_JSON)
            except UnsafePathError:
                raise
            except (OSError, ValueError):
                data = None  # not written yet, or being replaced
            data = data if isinstance(data, dict) else {}
            return {**data, "epochs": data.get("epochs") or [], "last_event_id": last_event_id}
        source = self._mlflow_source(run_id)
        events = source.read()
        return {"epochs": source.epoch_records(), "last_event_id": events[-1]["id"] if events else 0}

    def media(self, run_id: str) -> dict[str, Any]:
        """media.jsonl: ``{"media": [entry, ...]}`` in the order written.

        For a run this server cannot read, the same index rebuilt from the
        MLflow run's ``images/`` artifacts (what their names say; the rest
        ``null``); each ``path`` then names ``media/<artifact path>``, served
        by :meth:`media_file` from MLflow.
        """
        if self.local(run_id) is None:
            return self._mlflow_media(run_id)
        entries = [e for e in self.files.read_jsonl(run_id, "media.jsonl") if isinstance(e, dict)]
        return {"run_id": run_id, "media": entries}

    def system(self, run_id: str) -> dict[str, Any]:
        """system.jsonl: ``{"samples": [sample, ...]}`` in the order written."""
        self.local_or_404(run_id)
        samples = [e for e in self.files.read_jsonl(run_id, "system.jsonl") if isinstance(e, dict)]
        return {"run_id": run_id, "samples": samples}

    def media_file(self, run_id: str, path: str) -> tuple[bytes, Any]:
        """One file of the run's ``media/`` folder (no ``..``, no symlink): its bytes and stat.

        For a run read from MLflow, one file of its ``images/`` artifacts.
        """
        parts = split_relative(path)
        if self.local(run_id) is None:
            return self._mlflow_media_file(run_id, parts)
        return self.files.read_bytes(run_id, "media", *parts)

    # -- media of a run that lives in MLflow only --------------------------------------
    def _mlflow_media(self, run_id: str) -> dict[str, Any]:
        source = self._mlflow_source(run_id)
        paths = source.fetch(self._artifact_paths, source.mlflow_run_id, IMAGES_DIR)
        entries = media_index(paths)
        for entry in entries:
            for field in ("path", "data", "thumbnail"):
                if entry.get(field):
                    entry[field] = f"media/{entry[field]}"
        return {"run_id": run_id, "media": entries, "source": "mlflow"}

    def _mlflow_media_file(self, run_id: str, parts: list[str]) -> tuple[bytes, Any]:
        if not parts or parts[0] != IMAGES_DIR:
            raise RunNotFoundError(f"no media file {'/'.join(parts)!r} in MLflow run of {run_id!r}")
        source = self._mlflow_source(run_id)
        artifact = "/".join(parts)
        client = self._mlflow_client()
        run = source.fetch(client.get_run, source.mlflow_run_id)
        data = source.fetch(client.read_artifact, source.mlflow_run_id, run.info.artifact_uri, artifact)
        tag = zlib.crc32(artifact.encode("utf-8"))  # artifacts never change: the path and size make the ETag
        return data, FileInfo(len(data), 0.0, tag, tag)

    def _artifact_paths(self, mlflow_run_id: str, folder: str) -> list[str]:
        # MLflow's image layout is flat: one listing, as sync --verify reads it
        return [item.path for item in self._mlflow_client().list_artifacts(mlflow_run_id, folder) if not item.is_dir]

    def request_stop(self, run_id: str, requested_by: str) -> dict[str, Any]:
        """Ask a live run to stop at its next batch (writes the stop-request file: a POST's one write)."""
        run_dir = self.local(run_id)
        if run_dir is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in this server's runs root; a run can be stopped only "
                "where its run directory is readable"
            )
        status = self.read_run(run_id).get("status")
        if status not in _LIVE:
            raise RunConflictError(f"run {run_id!r} is already {status}; there is nothing to stop")
        run_dir.request_stop(requested_by=requested_by)
        return {"run_id": run_id, "status": status, "stop_requested": True}

    def local_or_404(self, run_id: str) -> RunDirectory:
        run_dir = self.local(run_id)
        if run_dir is None:
            raise RunNotFoundError(f"no run {run_id!r} in this server's runs root")
        return run_dir

    def _last_event_id(self, run_id: str) -> int:
        try:
            return self._file_source(RunDirectory(self.runs_root, run_id), liveness=False).last_id()
        except OSError:
            return 0

    # -- events --------------------------------------------------------------
    def event_source(self, run_id: str) -> SourceFactory:
        """A factory of event sources for the run: its events.jsonl, else its MLflow run.

        Raises RunNotFoundError when neither knows the run.
        """
        run_dir = self.local(run_id)
        if run_dir is not None:
            return lambda: self._file_source(run_dir)
        source = self._mlflow_source(run_id)
        return lambda: source  # thread-safe and cached: shared by the watcher and readers

    def _file_source(self, run_dir: RunDirectory, *, liveness: bool = True) -> FileEventSource:
        run_id = run_dir.run_id
        return FileEventSource(
            run_dir,
            poll_interval_s=self.settings.poll_interval_s,
            open_log=lambda: self.files.open(run_id, RunDirectory.EVENTS_JSONL),
            death_reason=(lambda: self.death_reason(run_id)) if liveness else None,
            liveness_check_s=self.settings.dead_run_check_s,
            attached=lambda: self.attached(run_id),
        )

    def attached(self, run_id: str) -> bool:
        """Whether the process that trained the run still holds it (validate/test stages may follow fit)."""
        try:
            run, info = self.files.read_json(run_id, RunDirectory.RUN_JSON)
        except (OSError, ValueError):
            return False
        return isinstance(run, dict) and bool(run.get("attached")) and self.judge.owner_alive(run, mtime=info.mtime)

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
