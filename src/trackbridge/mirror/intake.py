"""Intake: what callers hand the worker → its pending work, each entry with its place in the record.

Runs in the worker's thread (items are absorbed there), except
:meth:`Intake.start`, which the worker's ``start`` calls where nothing is
being written to the record: the record as it stands then is history, and
the lines handed over after it take the next line indices of their files.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from ..record.jsonio import read_json, read_jsonl
from ..record.run_dir import RunDirectory
from .backlog import MEDIA_JSONL, record_tops
from .cursor import CursorBuffer
from .mapping import Stream, Tracked, flat_params, tracked_epoch, tracked_stage, tracked_step, tracked_system
from .pending import Inputs, Media, Params, Pending, Record, Register, Status, Upload

log = logging.getLogger("trackbridge.mirror")


class ParamBook:
    """The run's params: what is wanted (the first value of a key wins), what MLflow holds; a change warned once."""

    def __init__(self, pending: Pending) -> None:
        self.pending = pending
        self.wanted: dict[str, str] = {}
        self.known: dict[str, str] | None = None  # what MLflow holds, once connected
        self._warned: set[str] = set()

    def want(self, params: Mapping[str, str]) -> None:
        for key, value in params.items():
            first = self.wanted.setdefault(key, value)
            if value != first:
                self._warn(key, first, value)
        self._queue()

    def connected(self, present: Mapping[str, str]) -> None:
        self.known = dict(present)
        self._queue()

    def sent(self, params: Mapping[str, str]) -> None:
        assert self.known is not None
        self.known.update(params)

    @property
    def complete(self) -> bool:
        return self.known is not None and all(key in self.known for key in self.wanted)

    def _queue(self) -> None:
        """Once connected: the wanted params MLflow does not hold yet (MLflow cannot change a param)."""
        if self.known is None:
            return
        for key, value in self.wanted.items():
            if key not in self.known:
                self.pending.params.setdefault(key, value)
            elif self.known[key] != value:
                self._warn(key, self.known[key], value)

    def _warn(self, key: str, kept: str, ignored: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("param %r is %r in MLflow's run; the new value %r is not logged "
                        "(MLflow params cannot change)", key, kept, ignored)


class Intake:
    """Absorbs queue items (all but ``Close``, which is the worker's) into :class:`~.pending.Pending`."""

    def __init__(self, run_dir: RunDirectory, pending: Pending, changes: CursorBuffer, params: ParamBook) -> None:
        self.run_dir = run_dir
        self.pending = pending
        self.changes = changes
        self.params = params
        self.skipped = 0  # live entries the record had already (replayed from it)
        self._next_line: dict[Stream, int] = {Stream.STEP: 0, Stream.SYSTEM: 0}
        self._media_lines: dict[str, int] = {}
        self._datasets: dict[str, dict[str, Any]] | None = None

    def start(self) -> None:
        """The record as it stands now is history: its entries come from the files, not live."""
        tops = record_tops(self.run_dir)
        self.pending.history(tops)
        self._next_line = {stream: (tops[stream] if tops[stream] is not None else -1) + 1
                           for stream in (Stream.STEP, Stream.SYSTEM)}

    def absorb(self, item: Any) -> None:
        pending = self.pending
        if isinstance(item, Record):
            mark = self._mark_of(item)
            if mark is None or not pending.accept(item.stream, mark):
                self.skipped += 1
                return
            pending.add_points(_tracked(item, mark))
        elif isinstance(item, Media):
            mark = self._media_mark(item.entry)
            if mark is not None and pending.accept(Stream.MEDIA, mark):
                pending.add_media(mark, item.entry)
        elif isinstance(item, Params):
            self.params.want(flat_params(item.values))
        elif isinstance(item, Inputs):
            pending.inputs = item.datasets
            # the run's datasets, fit's and a later stage's together, for a sync that sends them
            if self._datasets is None:
                self._datasets = {d["name"]: d for d in (self.changes.cursor.read()["datasets"] or [])}
            self._datasets.update({d["name"]: dict(d) for d in item.datasets})
            self.changes.set(datasets=list(self._datasets.values()), inputs_mirrored=False)
        elif isinstance(item, Upload):
            if item.relpath not in pending.uploads:
                pending.uploads[item.relpath] = None
                self.changes.add_pending([item.relpath])
        elif isinstance(item, Status):
            pending.status = item
        elif isinstance(item, Register):
            pending.register = item
            self.changes.set(registration_pending={"name": item.name, "alias": item.alias})

    def _mark_of(self, item: Record) -> int | None:
        if item.stream is Stream.EPOCH:
            return int(item.payload["epoch"])
        if item.stream is Stream.STAGE:
            return self._stage_mark(item.payload)
        mark = self._next_line[item.stream]  # lines come in file order: the next index
        self._next_line[item.stream] = mark + 1
        return mark

    def _stage_mark(self, entry: Mapping[str, Any]) -> int | None:
        """The index of a stage entry in metrics.json (written before it is handed over)."""
        try:
            stages = read_json(self.run_dir.metrics_json).get("stages") or []
        except (FileNotFoundError, ValueError):
            return None
        for index, stage in enumerate(stages):
            if stage.get("stage") == entry.get("stage") and stage.get("time") == entry.get("time"):
                return index
        return None

    def _media_mark(self, entry: Mapping[str, Any]) -> int | None:
        """The line index of a media entry in media.jsonl (written before it is handed over)."""
        path = str(entry.get("path"))
        if path not in self._media_lines:
            self._media_lines = {str(e.get("path")): i for i, e in enumerate(read_jsonl(self.run_dir.path / MEDIA_JSONL))
                                 if isinstance(e, dict)}
        return self._media_lines.get(path)



def _tracked(item: Record, mark: int) -> list[Tracked]:
    if item.stream is Stream.EPOCH:
        return tracked_epoch(item.payload)
    if item.stream is Stream.STEP:
        return tracked_step(mark, item.payload)
    if item.stream is Stream.SYSTEM:
        return tracked_system(mark, item.payload)
    return tracked_stage(mark, item.payload)
