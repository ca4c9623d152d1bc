"""JsonlAppender: append-only JSON-lines files that stay a sequence of whole records.

The rule (DESIGN §2): every ``*.jsonl`` file ends with a newline. An append
cut short (a full disk, a crash mid-write) leaves a torn last line; if the
next append were glued onto it, both records would be lost to every reader.
So before appending, a writer that finds the file not ending in a newline
cuts it back to its last newline, and an append that fails is cut back to
where it began. Readers (:func:`trackbridge.record.jsonio.read_jsonl`) skip
a torn last line: it is being written now or was never finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from .jsonio import dumps_strict

_CHUNK = 1 << 16


class JsonlAppender:
    """Appends complete lines to one JSON-lines file (one appender per file and writer).

    Not thread-safe: a file has one writing thread; writers in other processes
    append under the run's :class:`~trackbridge.record.locks.RunLock`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, value: Any, *, fsync: bool = False) -> None:
        """Append ``value`` as one line of strict JSON."""
        self.append_lines([dumps_strict(value)], fsync=fsync)

    def append_lines(self, lines: Iterable[str], *, fsync: bool = False) -> None:
        """Append already-serialized lines (no newline inside; one is added to each) in one write.

        Raises the ``OSError`` of a failed write after cutting the file back to
        where this append began, so the file still holds whole lines only.
        """
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        if not data:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            start = _cut_torn_tail(fd)
            try:
                _write_all(fd, data)
                if fsync:
                    os.fsync(fd)
            except OSError:
                _truncate_quietly(fd, start)
                raise
        finally:
            os.close(fd)

    def repair(self) -> bool:
        """Cut a torn last line now (e.g. when a resumed run reopens the file); True if one was cut."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            return _cut_torn_tail(fd) != size
        finally:
            os.close(fd)


def _cut_torn_tail(fd: int) -> int:
    """Cut the file behind ``fd`` back to its last newline if it does not end with one; returns its size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            os.ftruncate(fd, keep)
            return keep
        end = start
    os.ftruncate(fd, 0)
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the next append cuts the torn tail instead


def last_record(
    path: str | os.PathLike[str] | Callable[[], BinaryIO], accept: Callable[[Any], bool] = lambda value: True
) -> Any | None:
    """The last complete line of ``path`` that parses and that ``accept`` takes, read from the tail; None if none.

    ``path`` may also be a function that opens the file in binary mode (a
    web server's, which follows no symlink).
    """
    try:
        fh = path() if callable(path) else open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        size = fh.seek(0, os.SEEK_END)
        chunk = _CHUNK
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            data = fh.read(size - start)
            lines = data[: data.rfind(b"\n") + 1].splitlines()
            for line in reversed(lines if start == 0 else lines[1:]):  # lines[0] may be cut
                value = _parse(line)
                if value is not None and accept(value):
                    return value
            if start == 0:
                return None
            chunk *= 4


def _parse(line: bytes) -> Any | None:
    line = line.strip()
    if not line:
        return None
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
