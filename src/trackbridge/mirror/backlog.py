"""What of the local record MLflow still lacks: the diff that sync replays and a resumed run replays first.

The cursor's watermarks never run ahead of MLflow (see :mod:`.cursor`), so
the backlog is everything past them: epoch records, step lines, system
samples, stages and media entries whose mark is beyond their stream's
watermark. Computing it reads only the run directory.

:func:`verified_backlog` is the slow, complete diff (``trackbridge sync
--verify``): it reads MLflow's history of every key and its ``images/``
listing instead of trusting the cursor, for a record whose cursor was edited
or lost.

The record never rewrites what it holds (DESIGN §6's monotonic steps: a
resumed run records only past the last epoch and step it has), and lines
are only appended, so an entry past a watermark is one MLflow has never
been sent by the cursor's account, never a second value for one it holds.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, NamedTuple

from ..record.jsonio import read_json, read_jsonl
from ..record.run_dir import RunDirectory
from .cursor import watermark
from .mapping import Stream, Tracked, tracked_epoch, tracked_stage, tracked_step, tracked_system

SYSTEM_JSONL = "system.jsonl"
MEDIA_JSONL = "media.jsonl"


class LocalRecord(NamedTuple):
    """The parts of a run directory that become MLflow points and images."""

    epochs: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    steps: list[tuple[int, dict[str, Any]]]  # (line index, steps.jsonl line)
    system: list[tuple[int, dict[str, Any]]]  # (line index, system.jsonl sample)
    media: list[dict[str, Any]]  # every line, in order (index = mark)
    step_lines: int  # how many lines steps.jsonl holds (those left out unread included)
    system_lines: int

    def tops(self) -> dict[Stream, int | None]:
        """The last mark of each stream: where the watermarks stand once all of it is in MLflow."""
        return {
            Stream.EPOCH: max((int(r["epoch"]) for r in self.epochs), default=None),
            Stream.STAGE: (len(self.stages) - 1) if self.stages else None,
            Stream.STEP: (self.step_lines - 1) if self.step_lines else None,
            Stream.SYSTEM: (self.system_lines - 1) if self.system_lines else None,
            Stream.MEDIA: (len(self.media) - 1) if self.media else None,
        }


def record_tops(run_dir: RunDirectory) -> dict[Stream, int | None]:
    """The last mark of each stream, counting the lines of steps.jsonl and system.jsonl without parsing them."""
    try:
        metrics = read_json(run_dir.metrics_json)
    except (FileNotFoundError, ValueError):
        metrics = {}
    epochs = [int(r["epoch"]) for r in metrics.get("epochs", []) if isinstance(r, dict) and "epoch" in r]
    stages = metrics.get("stages") or []
    counts = {name: _count_lines(run_dir.path / name) for name in (RunDirectory.STEPS_JSONL, SYSTEM_JSONL, MEDIA_JSONL)}
    return {
        Stream.EPOCH: max(epochs, default=None),
        Stream.STAGE: (len(stages) - 1) if stages else None,
        Stream.STEP: counts[RunDirectory.STEPS_JSONL] - 1 if counts[RunDirectory.STEPS_JSONL] else None,
        Stream.SYSTEM: counts[SYSTEM_JSONL] - 1 if counts[SYSTEM_JSONL] else None,
        Stream.MEDIA: counts[MEDIA_JSONL] - 1 if counts[MEDIA_JSONL] else None,
    }


def _count_lines(path: Any) -> int:
    """Whole lines of a JSON-lines file (a torn last line, without its newline, is not one)."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def read_record(run_dir: RunDirectory, after: Mapping[Stream, int | None] | None = None) -> LocalRecord:
    """The local record; step and system lines at or below ``after``'s marks are counted, not parsed.

    Epochs, stages and media are always read whole (small); their tops need
    every entry.
    """
    after = after or {}
    try:
        metrics = read_json(run_dir.metrics_json)
    except FileNotFoundError:
        metrics = {}
    steps, step_lines = _lines_after(run_dir.steps_jsonl, after.get(Stream.STEP))
    system, system_lines = _lines_after(run_dir.path / SYSTEM_JSONL, after.get(Stream.SYSTEM))
    return LocalRecord(
        epochs=[r for r in metrics.get("epochs", []) if isinstance(r, dict) and "epoch" in r],
        stages=[s for s in metrics.get("stages", []) or [] if isinstance(s, dict)],
        steps=steps,
        system=system,
        media=[m for m in read_jsonl(run_dir.path / MEDIA_JSONL) if isinstance(m, dict)],
        step_lines=step_lines,
        system_lines=system_lines,
    )


def _lines_after(path: Any, mark: int | None) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """``([(index, line), ...] past ``mark``, number of whole lines)``; the lines up to ``mark`` are skipped unparsed.

    Not :func:`~trackbridge.record.jsonio.read_jsonl`: a no-op sync of a long
    run must not parse 100,000 lines it already sent.
    """
    import json

    found: list[tuple[int, dict[str, Any]]] = []
    index = -1
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return found, 0
    with fh:
        for index, line in enumerate(fh):
            if not line.endswith("\n"):
                return found, index  # a torn last line: being written, or never finished
            if mark is not None and index <= mark:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "step" in value:
                found.append((index, value))
    return found, index + 1


class Backlog(NamedTuple):
    """Points and images of the record that MLflow lacks, in order, with the record's tops."""

    points: list[Tracked]
    media: list[tuple[int, dict[str, Any]]]  # (line index, media.jsonl entry)
    tops: dict[Stream, int | None]

    @property
    def empty(self) -> bool:
        return not self.points and not self.media


def backlog(run_dir: RunDirectory, cursor: Mapping[str, Any]) -> Backlog:
    """Everything past the cursor's watermarks (the cursor is trusted: it never runs ahead of MLflow)."""
    marks = {stream: watermark(cursor, stream) for stream in Stream}
    record = read_record(run_dir, after=marks)
    return Backlog(list(points_after(record, marks)), media_after(record, marks.get(Stream.MEDIA)), record.tops())


def points_after(record: LocalRecord, marks: Mapping[Stream, int | None]) -> Iterator[Tracked]:
    """The record's points whose mark is past their stream's watermark, stream by stream, in mark order."""

    def past(stream: Stream, mark: int) -> bool:
        top = marks.get(stream)
        return top is None or mark > top

    for record_ in record.epochs:
        if past(Stream.EPOCH, int(record_["epoch"])):
            yield from tracked_epoch(record_)
    for index, line in record.steps:
        if past(Stream.STEP, index):
            yield from tracked_step(index, line)
    for index, line in record.system:
        if past(Stream.SYSTEM, index):
            yield from tracked_system(index, line)
    for index, entry in enumerate(record.stages):
        if past(Stream.STAGE, index):
            yield from tracked_stage(index, entry)


def media_after(record: LocalRecord, mark: int | None) -> list[tuple[int, dict[str, Any]]]:
    return [(i, e) for i, e in enumerate(record.media) if mark is None or i > mark]


def verified_backlog(
    run_dir: RunDirectory, history: Mapping[str, Iterable[int]], image_names: Iterable[str]
) -> Backlog:
    """Every point whose (key, step) MLflow's ``history`` lacks, and every image its listing lacks.

    The first local point of a (key, step) wins, as MLflow keeps the first
    one too when the record holds two (a record from before steps were
    monotonic).
    """
    from .media import image_stem

    record = read_record(run_dir)
    present = {key: set(steps) for key, steps in history.items()}
    seen: set[tuple[str, int]] = set()
    points = []
    for item in points_after(record, {}):
        ident = (item.point.key, item.point.step)
        if ident in seen or item.point.step in present.get(item.point.key, ()):
            continue
        seen.add(ident)
        points.append(item)
    listed = set(image_names)
    media = [(i, e) for i, e in enumerate(record.media) if f"{image_stem(e)}.png" not in listed]
    return Backlog(points, media, record.tops())


def record_points(run_dir: RunDirectory) -> list[Tracked]:
    """Every point of the local record (what MLflow holds once the run is fully mirrored)."""
    return list(points_after(read_record(run_dir), {}))


def record_keys(run_dir: RunDirectory) -> set[str]:
    """Every metric key of the local record (the keys whose MLflow history a verifying sync reads)."""
    return {item.point.key for item in points_after(read_record(run_dir), {})}
