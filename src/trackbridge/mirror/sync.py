"""Replay a finished local run into MLflow, idempotently: the diff (:mod:`.backlog`), then the :class:`~.writer.RunWriter`.

The cursor never lies (it moves only past what MLflow accepted), so sync
trusts it: it sends what lies past the watermarks — points, images, pending
uploads, missing params, datasets, the status — and then moves the
watermarks to the end of the record. A second sync finds nothing past them
and sends nothing. Points are sent with the record's own timestamps, so a
point that MLflow holds already (a cursor a crash left behind) is sent
identically and dropped by MLflow's SQL store. ``verify=True`` does not
trust the cursor: it reads MLflow's history of every key and its image
listing, and sends what is missing.

Point batches (1,000 points each, MLflow's ``log_batch`` limit) go out on a
few threads; a transient failure (5xx, 429, no answer) is retried a few
times with backoff that honours ``Retry-After``; a refusal stops the sync of
the run, is recorded in the cursor and raised with MLflow's message.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from .backend import SYNC_POLICY, HttpPolicy
from .backlog import Backlog, backlog, record_keys, verified_backlog
from .cursor import Cursor, cursor_of
from .errors import MirrorFailure
from .mapping import CHECKPOINT_ARTIFACTS, CONFIG_YAML, FINAL_ARTIFACTS, Stream, Tracked, batches, mlflow_status
from .outage import Backoff
from .registry import check_registrable, recorded_class, register_checkpoint, registration_summary
from .writer import RunLink, RunWriter, spec_for

log = logging.getLogger(__name__)
T = TypeVar("T")

SYNC_THREADS = 4  # concurrent log_batch requests (MLflow's server handles them; see docs/benchmarks.md)
TRIES = 4  # per request, on 5xx/429/no answer
MAX_RETRY_WAIT_S = 30.0


class SyncError(RuntimeError):
    """A run that cannot be synced as asked (e.g. it is still running)."""


@dataclass
class SyncResult:
    """What one sync did."""

    run_id: str
    tracking_uri: str
    uri_source: str  # where the tracking URI came from: "--tracking-uri", "run.json" or "default"
    mlflow_run_id: str | None = None
    url: str | None = None
    created: bool = False
    points_added: int = 0
    media_uploaded: int = 0
    params_added: int = 0
    artifacts_uploaded: list[str] = field(default_factory=list)
    status: str | None = None
    registered: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.points_added or self.media_uploaded or self.params_added
                    or self.artifacts_uploaded or self.status or self.registered)


@dataclass(frozen=True)
class Step:
    """One unit of a sync's work (a request, or a batch of them), for a progress bar."""

    label: str
    run: Callable[[], None]


class SyncJob:
    """A sync of one run: :meth:`connect`, :meth:`plan`, then :meth:`run` (or just :meth:`run`)."""

    def __init__(
        self,
        run_dir: RunDirectory,
        tracking_uri: str | None = None,
        *,
        experiment: str | None = None,
        verify: bool = False,
        threads: int = SYNC_THREADS,
        policy: HttpPolicy = SYNC_POLICY,
    ) -> None:
        self.run_dir = run_dir
        run = run_dir.read_run()
        self.run_status = RunStatus(run.get("status", "pending"))
        if self.run_status in (RunStatus.PENDING, RunStatus.RUNNING):
            raise SyncError(
                f"run {run_dir.run_id!r} is still {self.run_status.value}; its live mirror is sending it "
                "(sync it once it has ended)"
            )
        self.verify = verify
        self.threads = max(1, threads)
        self.cursor = Cursor(run_dir)
        stored = cursor_of(run)
        self.spec = spec_for(run_dir, tracking_uri=tracking_uri, experiment=experiment)
        self.writer = RunWriter(run_dir, self.spec, policy=policy)
        source = "--tracking-uri" if tracking_uri else ("run.json" if stored["tracking_uri"] else "default")
        self.result = SyncResult(run_id=run_dir.run_id, tracking_uri=self.spec.tracking_uri, uri_source=source)
        self.link: RunLink | None = None
        self.steps: list[Step] = []
        self._backlog: Backlog | None = None
        self._batches: list[list[Tracked]] = []
        self._point_steps: list[Step] = []
        self._delivered_batches = 0
        self._lock = threading.Lock()

    @property
    def tracking_uri(self) -> str:
        return self.spec.tracking_uri

    @property
    def mlflow_run_id(self) -> str:
        assert self.link is not None
        return self.link.run_id

    # -- preparing -------------------------------------------------------------
    def connect(self) -> RunLink:
        """Find (or create) the MLflow run; a run other than the cursor's starts from nothing."""
        if self.link is not None:
            return self.link
        stored = self.cursor.read()
        link = self.link = self._retrying(lambda: self.writer.connect(search=True, running=False))
        self.result.mlflow_run_id, self.result.url, self.result.created = link.run_id, link.url, link.created
        fields: dict[str, Any] = {
            "tracking_uri": self.tracking_uri, "experiment": link.experiment, "experiment_id": link.experiment_id,
            "run_id": link.run_id, "url": link.url, "adopted": link.adopted,
        }
        if stored["run_id"] != link.run_id or stored["tracking_uri"] != self.tracking_uri:
            fields.update({s.field: None for s in Stream}, params_mirrored=False, inputs_mirrored=False,
                          status_mirrored=None)
        if not link.adopted and link.status == mlflow_status(self.run_status):
            # the status is set last, after the final uploads, by the worker and by sync alike
            fields["status_mirrored"] = link.status
        self.cursor.update(**fields)
        return link

    def plan(self) -> list[Step]:
        """The work, as steps; computed once (connects first)."""
        if self.steps:
            return self.steps
        link = self.connect()
        cursor = self.cursor.read()
        writer = self.writer
        params = {k: v for k, v in self.spec.params.items() if k not in link.params}
        if params:
            self.steps.append(Step(f"{len(params)} params", lambda: self._log_params(params)))
        if cursor["datasets"] and not cursor["inputs_mirrored"]:
            self.steps.append(Step("datasets", lambda: self._retrying(lambda: writer.log_inputs(cursor["datasets"]))))
        self._backlog = todo = self._diff(cursor)
        self._batches = list(batches(todo.points))
        self._point_steps = [Step(f"{len(batch)} points", lambda batch=batch: self._log_points(batch))
                             for batch in self._batches]
        self.steps += self._point_steps
        for index, entry in todo.media:
            self.steps.append(Step(f"image {entry.get('key')}", lambda e=entry: self._upload_media(e)))
        for relpath in self._uploads(cursor, link):
            self.steps.append(Step(relpath, lambda relpath=relpath: self._upload(relpath)))
        target = mlflow_status(self.run_status)
        if not link.adopted and link.status != target:
            run = self.run_dir.read_run()
            end = run.get("completed_at")
            self.steps.append(Step(f"status {target}", lambda: self._terminate(target, end, run.get("error"))))
        pending = cursor["registration_pending"]
        if pending and self.run_status is RunStatus.COMPLETED:
            self.steps.append(Step(f"register {pending['name']}",
                                   lambda: self._register(pending["name"], pending.get("alias") or "champion")))
        return self.steps

    def _diff(self, cursor: Mapping[str, Any]) -> Backlog:
        if not self.verify:
            return backlog(self.run_dir, cursor)
        from .media import IMAGES_DIR

        backend = self.writer.backend
        history = {key: {m.step for m in self._retrying(lambda key=key: backend.get_metric_history(self.mlflow_run_id, key))}
                   for key in sorted(record_keys(self.run_dir))}
        listed = self._retrying(lambda: backend.list_artifacts(self.mlflow_run_id, IMAGES_DIR))
        return verified_backlog(self.run_dir, history, [info.path.rsplit("/", 1)[-1] for info in listed])

    def _uploads(self, cursor: Mapping[str, Any], link: RunLink) -> list[str]:
        """Pending uploads, and the whole final set when MLflow never saw the run end."""
        uploads = list(cursor["artifacts_pending"])
        ended = cursor["status_mirrored"] == mlflow_status(self.run_status) or (link.adopted and not link.created)
        if link.created or not ended:
            config = (self.run_dir.read_run().get("config") or {})
            uploads += list(FINAL_ARTIFACTS)
            if config.get("mirror_checkpoints", "best_last") != "none":
                uploads += list(CHECKPOINT_ARTIFACTS)
            if (self.run_dir.path / CONFIG_YAML).is_file():
                uploads.append(CONFIG_YAML)
        return [p for p in dict.fromkeys(uploads) if (self.run_dir.path / p).is_file()]

    # -- running -------------------------------------------------------------
    def run(self, advance: Callable[[int], None] | None = None) -> SyncResult:
        """Do every step (point batches concurrently); ``advance(n)`` after each finished step.

        Raises :class:`MirrorFailure` (after recording what was delivered)
        when MLflow refuses, or keeps failing for a step.
        """
        steps = self.plan()
        advance = advance or (lambda n: None)
        failure: MirrorFailure | None = None
        try:
            self._run_points(advance)
            for step in steps:
                if step not in self._point_steps:
                    step.run()
                    advance(1)
        except MirrorFailure as exc:
            failure = exc
        self._settle(failure)
        if failure is not None:
            raise failure
        return self.result

    def _run_points(self, advance: Callable[[int], None]) -> None:
        """Point batches on a few threads; the watermarks move over the delivered prefix only."""
        if not self._point_steps:
            return
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="trackbridge-sync") as pool:
            futures = [pool.submit(step.run) for step in self._point_steps]
            for future in as_completed(futures):
                advance(1)
        errors = [f.exception() for f in futures]
        self._delivered_batches = next((i for i, e in enumerate(errors) if e is not None), len(futures))
        for error in errors:
            if error is not None:
                raise error

    def _settle(self, failure: MirrorFailure | None) -> None:
        """Write what was delivered into the cursor: watermarks, flags, the refusal if any."""
        todo = self._backlog
        marks: dict[Stream, int | None] = {}
        if todo is not None:
            if self._delivered_batches == len(self._batches):
                marks.update({s: top for s, top in todo.tops.items() if s is not Stream.MEDIA})
            else:
                marks.update(prefix_marks(self._batches, self._delivered_batches))
            uploaded = self.result.media_uploaded
            if uploaded == len(todo.media):
                marks[Stream.MEDIA] = todo.tops[Stream.MEDIA]
            elif uploaded:
                marks[Stream.MEDIA] = todo.media[uploaded - 1][0]
        fields: dict[str, Any] = {}
        if failure is None:
            fields.update(params_mirrored=True, inputs_mirrored=True, refused=None)
        refused = None
        if failure is not None and failure.refused:
            refused = {"operations": ["sync"], "message": str(failure)}
        self.cursor.apply(fields, marks=marks, refused=refused)

    # -- each step: one request, retried on transient failures ---------------------
    def _retrying(self, call: Callable[[], T]) -> T:
        backoff = Backoff(1.0, 8.0)
        for attempt in range(TRIES):
            try:
                return call()
            except MirrorFailure as failure:
                if failure.refused or attempt == TRIES - 1:
                    raise
                delay = backoff.delay(failure)
                if delay > MAX_RETRY_WAIT_S:
                    raise
                log.info("MLflow failed (%s); retrying in %.0f s", failure, delay)
                threading.Event().wait(delay)
        raise AssertionError("unreachable")

    def _log_params(self, params: Mapping[str, str]) -> None:
        self._retrying(lambda: self.writer.log_params(params))
        self.result.params_added += len(params)

    def _log_points(self, batch: list[Tracked]) -> None:
        self._retrying(lambda: self.writer.log_points([item.point for item in batch]))
        with self._lock:
            self.result.points_added += len(batch)

    def _upload_media(self, entry: Mapping[str, Any]) -> None:
        self._retrying(lambda: self.writer.upload_media(entry))
        self.result.media_uploaded += 1  # a vanished image counts as done: there is nothing to send

    def _upload(self, relpath: str) -> None:
        if self._retrying(lambda: self.writer.upload(relpath)):
            self.result.artifacts_uploaded.append(relpath)
        self.cursor.remove_pending([relpath])

    def _terminate(self, status: str, end: str | None, error: str | None) -> None:
        from .mapping import iso_to_ms

        self._retrying(lambda: self.writer.terminate(status, iso_to_ms(end) if end else None, error))
        self.result.status = status
        self.cursor.update(status_mirrored=status)

    def _register(self, name: str, alias: str) -> None:
        self.result.registered = register_checkpoint(self.writer, name, alias)
        self.cursor.update(registration_pending=None, registered=registration_summary(self.result.registered))


def prefix_marks(all_batches: list[list[Tracked]], delivered: int) -> dict[Stream, int | None]:
    """The watermarks that the first ``delivered`` batches allow (a stream's mark cut by a batch stays below it)."""
    marks: dict[Stream, int | None] = {}
    sent = [item for batch in all_batches[:delivered] for item in batch]
    rest = [item for batch in all_batches[delivered:] for item in batch]
    first_left: dict[Stream, int] = {}
    for item in rest:
        first_left.setdefault(item.stream, item.mark)
    for item in sent:
        limit = first_left.get(item.stream)
        mark = item.mark if limit is None or item.mark < limit else limit - 1
        current = marks.get(item.stream)
        marks[item.stream] = mark if current is None else max(current, mark)
    return marks


def sync_run(
    run_dir: RunDirectory, tracking_uri: str | None = None, *, experiment: str | None = None, verify: bool = False
) -> SyncResult:
    """Replay whatever MLflow lacks of ``run_dir`` into its MLflow run (created if it never existed).

    ``tracking_uri`` defaults to the one in run.json (resolved when the run
    was created), then the run's config, then ``$MLFLOW_TRACKING_URI``, then
    the embedded store. Idempotent: a second call adds nothing. Points whose
    value is ``null`` in the record (NaN or ±Inf during training) are skipped,
    live and in sync alike. Raises :class:`~.errors.MirrorFailure` when MLflow
    refuses (its message says why) or stays unreachable.
    """
    return SyncJob(run_dir, tracking_uri, experiment=experiment, verify=verify).run()


def register_run(
    run_dir: RunDirectory,
    name: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
    *,
    module_class: type | None = None,
) -> dict[str, Any]:
    """Sync a finished run, then register its best.ckpt as a new version of model ``name``.

    Returns ``{"name", "version", "alias", "alias_moved", "model_uri", ...}``.
    Raises :class:`~.registry.RegistrationError` when the run is not
    completed, has no best.ckpt, or its LightningModule class is unknown. The
    version links to an MLflow run that holds the same record.
    """
    run = run_dir.read_run()
    check_registrable(run, run_dir, alias)
    module_class = module_class or recorded_class(run, run_dir)
    job = SyncJob(run_dir, tracking_uri)
    job.run()
    result = register_checkpoint(job.writer, name, alias, module_class)
    job.cursor.update(registered=registration_summary(result), registration_pending=None)
    return result


def describe(results: Iterable[SyncResult]) -> list[str]:
    """One line per result, as the CLI prints them."""
    lines = []
    for result in results:
        if not result.changed:
            lines.append(f"run {result.run_id}: already in sync -> {result.url}")
            continue
        parts = [f"+{result.points_added} points"]
        if result.created:
            parts.insert(0, "created in MLflow")
        if result.params_added:
            parts.append(f"{result.params_added} params")
        if result.media_uploaded:
            parts.append(f"{result.media_uploaded} images")
        if result.artifacts_uploaded:
            parts.append(f"{len(result.artifacts_uploaded)} artifacts")
        if result.status:
            parts.append(f"status {result.status}")
        if result.registered:
            parts.append(f"registered {result.registered['name']} v{result.registered['version']}")
        lines.append(f"run {result.run_id}: {', '.join(parts)} -> {result.url}")
    return lines
