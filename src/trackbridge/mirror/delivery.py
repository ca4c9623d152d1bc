"""Delivery: each operation the worker asks of MLflow, and what its success or refusal changes.

One method per :class:`~.pending.Operation`, each one MLflow request (or a
few, overlapped, in the final wave) through the run's writer; on success it
updates the pending work, the cursor's watermarks and the stats. A failure
propagates as :class:`~.errors.MirrorFailure` with :attr:`Delivery.operation`
naming what failed, for the worker to decide; a refusal comes back to
:meth:`Delivery.refuse`, which drops what the request carried from the live
queue and keeps it counted in run.json for ``trackbridge sync``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..record.run_dir import RunDirectory
from .backlog import backlog
from .cursor import Cursor, CursorBuffer
from .intake import ParamBook
from .mapping import Point, Stream
from .pending import Operation, Pending, Register, Status
from .writer import RunLink, RunSpec

log = logging.getLogger("trackbridge.mirror")

UPLOAD_THREADS = 6  # concurrent requests in the final flush
Registrar = Callable[[Any, str, str, "type | None"], dict]


class RunWriterLike(Protocol):
    """What the worker needs of a :class:`~.writer.RunWriter` (tests give it a fake)."""

    run_dir: RunDirectory
    spec: RunSpec
    link: RunLink | None

    def connect(self, *, search: bool = True, running: bool = True) -> RunLink: ...
    def log_points(self, points: Sequence[Point]) -> None: ...
    def log_params(self, params: Mapping[str, str]) -> None: ...
    def log_inputs(self, datasets: Sequence[Mapping[str, Any]]) -> None: ...
    def upload(self, relpath: str) -> bool: ...
    def upload_media(self, entry: Mapping[str, Any]) -> bool: ...
    def terminate(self, status: str, end_ms: int | None, error: str | None = None) -> None: ...
    def cleanup(self) -> None: ...


class Stats:
    """What the worker did; the callback reports it and tests read it."""

    __slots__ = ("points_sent", "entries_skipped", "points_rejected", "requests", "uploads", "media", "failures",
                 "outages")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def __repr__(self) -> str:
        return "MirrorStats(" + ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__) + ")"


class Delivery:
    """The operations of one run's worker; see the module docstring."""

    def __init__(
        self, writer: RunWriterLike, pending: Pending, changes: CursorBuffer, params: ParamBook, stats: Stats, *,
        announce: Callable[[str], None], registrar: Registrar | None = None, mark_running: bool = True,
    ) -> None:
        self.writer = writer
        self.pending = pending
        self.changes = changes
        self.params = params
        self.stats = stats
        self.announce = announce
        self.registrar = registrar
        self.mark_running = mark_running  # a run found again is set RUNNING (not for a stage after fit)
        self.operation = Operation.CONNECT  # what the MLflow call in progress is doing
        self.in_flight: str | None = None  # the upload a failure is about
        self.refused: set[Operation] = set()
        self._connect_tries = 0

    @property
    def run_id(self) -> str:
        return self.writer.run_dir.run_id

    @property
    def tracking_uri(self) -> str:
        return self.writer.spec.tracking_uri

    def connect(self) -> RunLink:
        """Find, adopt or create the MLflow run; a run other than the cursor's starts from nothing."""
        search = self._connect_tries > 0  # a lost answer to an earlier create_run may have created it
        self._connect_tries += 1
        cursor = Cursor(self.writer.run_dir).read()
        link = self.writer.connect(search=search or cursor["run_id"] is not None, running=self.mark_running)
        if cursor["run_id"] != link.run_id or cursor["tracking_uri"] != self.tracking_uri:
            self.changes.set(**{stream.field: None for stream in Stream}, params_mirrored=False,
                             inputs_mirrored=False, status_mirrored=None)
        self.params.connected(link.params)
        self.params.want(self.writer.spec.params)  # the run's config and hyperparameters
        self.changes.set(
            tracking_uri=self.tracking_uri, experiment=link.experiment, experiment_id=link.experiment_id,
            run_id=link.run_id, url=link.url, adopted=link.adopted,
            status_mirrored=None if link.adopted else "RUNNING",
            module_class=self.writer.spec.module_class,
        )
        return link

    def replay(self) -> None:
        """Queue what MLflow lacks of the record (past the cursor), ahead of newer points; local reads only."""
        cursor = Cursor(self.writer.run_dir).read()
        missing = backlog(self.writer.run_dir, cursor)
        self.pending.add_backlog(missing.points, missing.media)
        for relpath in cursor["artifacts_pending"]:
            self.pending.uploads.setdefault(relpath, None)
        if not cursor["inputs_mirrored"] and cursor["datasets"] and self.pending.inputs is None:
            self.pending.inputs = tuple(cursor["datasets"])
        self.pending.replay = False

    def send_params(self) -> None:
        params = dict(self.pending.params)
        self.writer.log_params(params)
        self.pending.params.clear()
        self.params.sent(params)
        self.stats.requests += 1
        if self.params.complete:
            self.changes.set(params_mirrored=True)

    def send_inputs(self) -> None:
        assert self.pending.inputs is not None
        self.writer.log_inputs(self.pending.inputs)
        self.pending.inputs = None
        self.changes.set(inputs_mirrored=True)

    def send_points(self) -> None:
        while self.pending.points:
            batch = self.pending.head()
            self.writer.log_points([item.point for item in batch])
            self._points_delivered(len(batch))

    def _points_delivered(self, count: int) -> None:
        self.stats.requests += 1
        self.stats.points_sent += count
        for stream, mark in self.pending.delivered(count).items():
            self.changes.mark(stream, mark)

    def send_media(self) -> None:
        _, entry = self.pending.media[0]
        self.writer.upload_media(entry)
        self._media_delivered()

    def _media_delivered(self) -> None:
        self.stats.media += 1
        for stream, mark in self.pending.media_done().items():
            self.changes.mark(stream, mark)

    def upload_next(self) -> None:
        relpath = self.in_flight = next(iter(self.pending.uploads))
        self.writer.upload(relpath)
        self._uploaded([relpath])

    def _uploaded(self, paths: list[str]) -> None:
        for path in paths:
            del self.pending.uploads[path]
        self.stats.uploads += len(paths)
        self.changes.remove_pending(paths)

    def final_wave(self) -> None:
        """The flush training waits for: the last points, images and uploads, all at once.

        Their round trips overlap (the status follows, alone) in a small
        thread pool; what succeeded is kept, and the first failure is raised
        like any other, with :attr:`operation` set to what it belongs to.
        """
        pending, writer = self.pending, self.writer
        head = pending.head()
        paths = list(pending.uploads)
        media = list(pending.media)
        if bool(head) + len(paths) + len(media) < 2:
            return  # nothing to overlap: the sequential path does it
        try:
            with ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="trackbridge-upload") as pool:
                points = pool.submit(writer.log_points, [item.point for item in head]) if head else None
                images = [pool.submit(writer.upload_media, entry) for _, entry in media]
                uploads = {path: pool.submit(writer.upload, path) for path in paths}
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return
        if points is not None and points.exception() is None:
            self._points_delivered(len(head))
        for future in images:  # in order: the media watermark moves over a delivered prefix only
            if future.exception() is not None:
                break
            self._media_delivered()
        self._uploaded([path for path, f in uploads.items() if f.exception() is None])
        failures = [(Operation.POINTS, None, points)] if points is not None else []
        failures += [(Operation.MEDIA, None, f) for f in images]
        failures += [(Operation.UPLOAD, path, f) for path, f in uploads.items()]
        for operation, path, future in failures:
            if future.exception() is not None:
                self.operation, self.in_flight = operation, path
                raise future.exception()  # type: ignore[misc]

    def send_status(self, item: Status) -> None:
        self.writer.terminate(item.status, item.end_ms, item.error)
        self.pending.status = None
        link = self.writer.link
        if link is not None and not link.adopted:
            self.changes.set(status_mirrored=item.status)

    def register(self, item: Register) -> None:
        from .registry import register_checkpoint, registration_summary

        registrar = self.registrar or register_checkpoint
        result = registrar(self.writer, item.name, item.alias, item.module_class)
        self.pending.register = None
        self.changes.set(registration_pending=None, registered=registration_summary(result))
        log.info(
            "registered %s version %s (%s)%s",
            result["name"], result["version"], result["model_uri"],
            f"; alias @{item.alias} now points to it" if result["alias_moved"] else "",
        )

    def refuse(self, operation: Operation, message: str) -> None:
        """MLflow answered "no": drop what the request carried from the live queue; sync sends it again."""
        pending = self.pending
        points = media = 0
        if operation is Operation.POINTS:
            points = len(pending.head())
            for stream, mark in pending.refused(points).items():
                self.changes.mark(stream, mark)
            self.stats.points_rejected += points
        elif operation is Operation.MEDIA:
            media = 1
            pending.media_done(refused=True)
        elif operation is Operation.UPLOAD:
            pending.uploads.pop(self.in_flight or next(iter(pending.uploads)), None)  # stays pending in the cursor
        elif operation is Operation.PARAMS:
            pending.params.clear()
        elif operation is Operation.INPUTS:
            pending.inputs = None
        elif operation is Operation.STATUS:
            pending.status = None
        elif operation is Operation.REGISTER:
            pending.register = None
        self.changes.refuse(operation.value, message, points=points, media=media)
        if operation not in self.refused:
            self.refused.add(operation)
            what = f"{points} metric points" if points else f"the {operation.value}"
            self.announce(
                f"MLflow at {self.tracking_uri} refused {what} of run {self.run_id}: {message}. "
                f"They stay in the local record and are counted in run.json; run "
                f"`trackbridge sync {self.run_id}` once MLflow accepts them"
            )
