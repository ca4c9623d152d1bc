"""Where a server reads a run's events: the run directory's events.jsonl, or the MLflow run.

Both sources answer ``read(after_id)`` with the complete events whose id is
greater than ``after_id``, in order, in the shapes of DESIGN §4. A server in
another process on the same host tails the file; a server on another host
(no shared disk) derives the same ``run_started`` / ``epoch_end`` / terminal
events from the MLflow run, the tracking server being the shared store.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Protocol

from ..mlflow_tags import ERROR_TAG, MAX_EPOCHS_TAG, RUN_ID_TAG
from ..record.clock import iso
from ..record.epoch import STEP_SUFFIX
from ..record.ids import validate_run_id
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from ..record.jsonl import last_record
from .log import is_event, parse_event_line
from .types import TERMINAL_EVENT_TYPES, EventType, make_event, terminal_event_type

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# The tag the MLflow mirror puts on each MLflow run: the trackbridge run id.

_STATUS_BY_MLFLOW = {
    "FINISHED": RunStatus.COMPLETED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.STOPPED,
}


class SourceUnavailableError(OSError):
    """Raised when a source cannot be read right now (e.g. the MLflow server is down)."""


class EventSource(Protocol):
    """A run's events, readable from any process."""

    run_id: str
    #: How often a watcher should look for new events, in seconds.
    poll_interval_s: float

    def read(self, after_id: int = 0) -> list[dict[str, Any]]:
        """The complete events with ``id > after_id``, in id order."""
        ...

    def last_event(self) -> dict[str, Any] | None:
        """The last event (None if there is none yet)."""
        ...

    def attached(self) -> bool:
        """Whether the run's process still holds the run: events may follow its terminal event."""
        ...


class FileEventSource:
    """The events of a run directory's ``events.jsonl``, read incrementally.

    The instance remembers how far it has read: a ``read(after_id)`` that
    continues from the last one reads only the new bytes, and costs one
    open and ``fstat`` when nothing was appended, so a poll every 20 ms is
    cheap. A line without its newline is being written: it is left for the
    next read. One instance belongs to one thread.

    ``open_log``: how the log is opened (a web server passes one that follows
    no symlink); default ``open(path, "rb")``. ``death_reason``: asked at most
    every ``liveness_check_s`` while the log has no terminal event; when it
    names a reason (the run's process died without reporting), ``read`` ends
    the log with a *derived* ``training_failed`` (id = last + 1,
    ``"derived": true``) that is not written anywhere: a reader reports the
    death without writing the run's files.
    """

    def __init__(
        self,
        run_dir: RunDirectory,
        *,
        poll_interval_s: float = 0.05,
        open_log: Callable[[], BinaryIO] | None = None,
        death_reason: Callable[[], str | None] | None = None,
        liveness_check_s: float = 5.0,
        attached: Callable[[], bool] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_dir.run_id
        self.path = run_dir.events_jsonl
        self.poll_interval_s = poll_interval_s
        self._open_log = open_log or (lambda: open(self.path, "rb"))
        self._death_reason = death_reason
        self._attached = attached
        self.liveness_check_s = liveness_check_s
        self._offset = 0  # bytes of complete lines consumed
        self._last_id = 0  # highest id among those lines
        self._last_type: str | None = None
        self._last_time: str | None = None
        self._inode: int | None = None
        self._checked_at = -math.inf
        self._derived: dict[str, Any] | None = None

    def read(self, after_id: int = 0) -> list[dict[str, Any]]:
        if after_id < self._last_id:  # the caller wants events already passed: start over
            self._rewind()
        events = self._read_new(after_id)
        derived = self._derived_end()
        if derived is not None and derived["id"] > after_id:
            events.append(derived)
        return events

    def last_event(self) -> dict[str, Any] | None:
        """The log's last complete event (or the derived end of a dead run), read from the tail."""
        event = self._tail_event()
        if event is not None and event["id"] > self._last_id:
            self._last_id, self._last_type, self._last_time = event["id"], event.get("type"), event.get("time")
        derived = self._derived_end()
        return derived if derived is not None and (event is None or derived["id"] > event["id"]) else event

    def attached(self) -> bool:
        """Whether the run's process still holds the run (more events may follow its terminal event)."""
        return self._attached() if self._attached is not None else False

    def last_id(self) -> int:
        """The id of the log's last complete event (0 if none), read from its tail, not the whole file."""
        event = self._tail_event()
        return event["id"] if event is not None else 0

    def _read_new(self, after_id: int) -> list[dict[str, Any]]:
        try:
            fh = self._open_log()
        except FileNotFoundError:
            return []
        with fh:
            stat = os.fstat(fh.fileno())
            if stat.st_ino != self._inode or stat.st_size < self._offset:
                self._rewind()  # the log was replaced or cut: read it again from the top
                self._inode = stat.st_ino
            if stat.st_size == self._offset:
                return []
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            event = parse_event_line(line)
            if event is None:
                continue
            if event["id"] >= self._last_id:
                self._last_id, self._last_type, self._last_time = event["id"], event.get("type"), event.get("time")
            if event["id"] > after_id:
                events.append(event)
        return events

    def _tail_event(self) -> dict[str, Any] | None:
        return last_record(self._open_log, is_event)

    def _derived_end(self) -> dict[str, Any] | None:
        """The derived ``training_failed`` of a dead run, or None (asked at most every liveness_check_s)."""
        if self._death_reason is None or self._last_type in TERMINAL_EVENT_TYPES:
            self._derived = None
            return None
        if self._derived is not None and self._derived["id"] != self._last_id + 1:
            self._derived = None  # the log grew: the run was alive after all
        now = time.monotonic()
        if now - self._checked_at >= self.liveness_check_s:
            self._checked_at = now
            reason = self._death_reason()
            if reason is None:
                self._derived = None
            elif self._derived is None or self._derived.get("error") != reason:
                derived = make_event(
                    self._last_id + 1, EventType.TRAINING_FAILED, self.run_id,
                    status=RunStatus.FAILED.value, error=reason, derived=True,
                )
                # Its time is the last sign of life in the log: the same for every reader of the run.
                self._derived = {**derived, "time": self._last_time or derived["time"]}
        return self._derived

    def _rewind(self) -> None:
        self._offset = 0
        self._last_id = 0
        self._last_type = None
        self._last_time = None


class MlflowEventSource:
    """The events of a run derived from its MLflow run.

    ``run_started`` (id 1), one ``epoch_end`` per step of the epoch metrics
    (ids 2, 3, ...: the mirror logs each epoch record with ``step = epoch``),
    and the terminal event of a finished MLflow status. The ids are derived,
    so they differ from the file's when the file also holds ``progress`` or
    ``checkpoint_saved`` events; types, epochs and metrics are the same.
    ``*_step`` keys (the per-step curves) and the ``epoch`` key are not epoch
    metrics. NaN stored in MLflow comes back as ``null``, as in the file.

    Thread-safe and shared: a result is reused for ``min_refresh_s`` seconds,
    and the metric histories are fetched again only when the run changed.
    """

    def __init__(
        self,
        client: "MlflowClient",
        mlflow_run_id: str,
        run_id: str,
        *,
        poll_interval_s: float = 2.0,
        min_refresh_s: float = 0.5,
    ) -> None:
        self.client = client
        self.mlflow_run_id = mlflow_run_id
        self.run_id = validate_run_id(run_id)
        self.poll_interval_s = poll_interval_s
        self.min_refresh_s = min_refresh_s
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._run: "Run | None" = None
        self._signature: object = None
        self._fetched_at = -math.inf

    def attached(self) -> bool:
        """MLflow does not say whether a process still holds the run: a stream ends at its terminal event."""
        return False

    def read(self, after_id: int = 0) -> list[dict[str, Any]]:
        return [event for event in self._refresh() if event["id"] > after_id]

    def last_event(self) -> dict[str, Any] | None:
        events = self._refresh()
        return events[-1] if events else None

    def epoch_records(self) -> list[dict[str, Any]]:
        """The epoch records (``{"epoch": k, <metric>: value, "time": ...}``), as in metrics.json."""
        self._refresh()
        return [dict(record) for record in self._records]

    def run(self) -> "Run":
        """The MLflow run as last fetched."""
        self._refresh()
        assert self._run is not None
        return self._run

    def _refresh(self) -> list[dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._fetched_at < self.min_refresh_s:
                return self._events
            run = self.fetch(self.client.get_run, self.mlflow_run_id)
            signature = (
                run.info.status,
                run.info.end_time,
                tuple(sorted(run.data.metrics.items(), key=lambda kv: kv[0])),
            )
            if signature != self._signature:
                histories = {
                    key: self.fetch(self.client.get_metric_history, self.mlflow_run_id, key)
                    for key in sorted(run.data.metrics)
                    if _is_epoch_metric(key)
                }
                self._records = _epoch_records(histories)
                self._events = _derive_events(run, self._records, self.run_id)
                self._signature = signature
            self._run = run
            self._fetched_at = time.monotonic()
            return self._events

    def fetch(self, call: Any, *args: Any) -> Any:
        """``call(*args)``, an MLflow read about this run: any failure is :class:`SourceUnavailableError`.

        The one place the source talks to MLflow (the catalog's media reads go
        through it too): a failure there (MlflowException, connection or
        database errors) means "not readable now", never a crash of the caller.
        """
        try:
            return call(*args)
        except Exception as exc:
            raise SourceUnavailableError(
                f"cannot read MLflow run {self.mlflow_run_id} of run {self.run_id!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _is_epoch_metric(key: str) -> bool:
    """Keys whose history may hold epoch points (``epoch`` itself gives their steps and timestamps)."""
    return not key.endswith(STEP_SUFFIX)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return iso(datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc))


def _epoch_records(histories: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The epoch records (``{"epoch", <key>: value, ..., "time"}``) held in MLflow's histories.

    The mirror logs every key of an epoch record at ``step = epoch`` with the
    record's own timestamp, the ``epoch`` key included; so the points of epoch
    ``k`` are exactly those at step ``k`` with the timestamp of the ``epoch``
    metric's point at step ``k``. Step curves (a global step that happens to
    equal an epoch number) and stage metrics (logged at the last epoch's step,
    later) carry other timestamps and stay out.
    """
    stamps = {int(p.step): int(p.timestamp) for p in histories.get("epoch", ()) if p.step >= 1}
    if not stamps:  # a run mirrored without the epoch key: every step >= 1 of the non-step keys
        stamps = {int(p.step): int(p.timestamp) for points in histories.values() for p in points if p.step >= 1}
        exact = False
    else:
        exact = True
    by_epoch: dict[int, dict[str, Any]] = {step: {} for step in stamps}
    for key, points in histories.items():
        if key == "epoch":
            continue
        for point in sorted(points, key=lambda p: (p.step, p.timestamp)):
            step = int(point.step)
            if step in by_epoch and (not exact or int(point.timestamp) == stamps[step]):
                by_epoch[step][key] = _finite(float(point.value))
    return [{"epoch": epoch, **by_epoch[epoch], "time": _ms_to_iso(stamps[epoch])} for epoch in sorted(by_epoch)]


def _max_epochs(run: "Run") -> int | None:
    candidates = [run.data.tags.get(MAX_EPOCHS_TAG)]
    params = run.data.params
    candidates.append(params.get("max_epochs"))
    candidates += [v for k, v in sorted(params.items()) if k.rsplit(".", 1)[-1].rsplit("/", 1)[-1] == "max_epochs"]
    for value in candidates:
        if value is None:
            continue
        try:
            return int(float(value))
        except (TypeError, ValueError):
            continue
    return None


def _derive_events(run: "Run", records: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    max_epochs = _max_epochs(run)
    events = [
        {
            "id": 1,
            "type": EventType.RUN_STARTED.value,
            "run_id": run_id,
            "time": _ms_to_iso(run.info.start_time),
            "max_epochs": max_epochs,
            "start_epoch": 1,
            "total_batches": None,
        }
    ]
    for record in records:
        metrics = {k: v for k, v in record.items() if k not in ("epoch", "time")}
        events.append(
            {
                "id": len(events) + 1,
                "type": EventType.EPOCH_END.value,
                "run_id": run_id,
                "time": record["time"],
                "epoch": record["epoch"],
                "max_epochs": max_epochs,
                "metrics": metrics,
            }
        )
    status = _STATUS_BY_MLFLOW.get(run.info.status)
    if status is not None:
        fields: dict[str, Any] = {"status": status.value}
        if status is RunStatus.FAILED:
            fields["error"] = run.data.tags.get(ERROR_TAG) or "the MLflow run ended as FAILED"
        events.append(
            {
                "id": len(events) + 1,
                "type": terminal_event_type(status).value,
                "run_id": run_id,
                "time": _ms_to_iso(run.info.end_time),
                **fields,
            }
        )
    return events


def mlflow_run_status(run: "Run") -> str:
    """The trackbridge status (DESIGN §2) of an MLflow run."""
    status = _STATUS_BY_MLFLOW.get(run.info.status)
    return status.value if status else RunStatus.RUNNING.value


def find_mlflow_run(client: "MlflowClient", run_id: str) -> "Run | None":
    """The newest MLflow run tagged ``trackbridge.run_id = run_id``, else named ``run_id``; None if none.

    Raises :class:`SourceUnavailableError` when MLflow cannot be asked.
    """
    run_id = validate_run_id(run_id)  # the id goes into a filter string: only [A-Za-z0-9._-]
    try:
        experiment_ids = [e.experiment_id for e in _all_experiments(client)]
        if not experiment_ids:
            return None
        for filter_string in (f"tags.`{RUN_ID_TAG}` = '{run_id}'", f"attributes.run_name = '{run_id}'"):
            runs = client.search_runs(
                experiment_ids, filter_string, max_results=1, order_by=["attributes.start_time DESC"]
            )
            if runs:
                return runs[0]
    except Exception as exc:  # MlflowException, connection errors
        raise SourceUnavailableError(f"cannot search MLflow for run {run_id!r}: {type(exc).__name__}: {exc}") from exc
    return None


def _all_experiments(client: "MlflowClient") -> list[Any]:
    experiments, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiments += list(page)
        token = getattr(page, "token", None)
        if not token:
            return experiments
