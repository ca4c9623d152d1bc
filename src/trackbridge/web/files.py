"""RunFiles: open a run's files for the API without following any symbolic link below the runs root.

Each path component under the (resolved) runs root is opened relative to
its parent's descriptor with ``O_NOFOLLOW``, so a run directory, a run.json
or a media file that is a symlink is refused however it is named, and a
name can never climb out (``..`` and empty components are refused before
any open). Only regular files are served: a FIFO or a device would block or
stream forever.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

from ..record.ids import InvalidRunIdError, validate_run_id

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO must not wait for a writer; the S_ISREG check then refuses it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
MAX_PATH_PARTS = 16


class UnsafePathError(PermissionError):
    """A path the API refuses to open: a symbolic link, ``..``, or not a regular file."""


@dataclass(frozen=True)
class FileInfo:
    size: int
    mtime: float
    mtime_ns: int
    inode: int


class RunFiles:
    """The files of the run directories under one runs root, opened safely."""

    def __init__(self, runs_root: str | os.PathLike[str]) -> None:
        # The root itself is the operator's choice: it may be a symlink, resolved once here.
        self.root = os.path.realpath(runs_root)

    def open(self, run_id: str, *parts: str) -> BinaryIO:
        """``<root>/<run_id>/<parts...>`` opened for reading (binary).

        Raises InvalidRunIdError for a bad id, UnsafePathError for a symlink or a
        bad component, FileNotFoundError when it is not there.
        """
        validate_run_id(run_id)
        names = [run_id, *parts]
        for name in parts:
            check_component(name)
        directory = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in names[:-1]:
                child = _open_below(directory, name, _DIR_FLAGS)
                os.close(directory)
                directory = child
            fd = _open_below(directory, names[-1], _FILE_FLAGS)
        finally:
            os.close(directory)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise UnsafePathError(f"{'/'.join(parts)} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def read_bytes(self, run_id: str, *parts: str) -> tuple[bytes, FileInfo]:
        with self.open(run_id, *parts) as fh:
            info = os.fstat(fh.fileno())
            data = fh.read()
        return data, FileInfo(info.st_size, info.st_mtime, info.st_mtime_ns, info.st_ino)

    def read_json(self, run_id: str, *parts: str) -> tuple[Any, FileInfo]:
        """The parsed JSON file and its stat (ValueError if it is not JSON)."""
        data, info = self.read_bytes(run_id, *parts)
        return json.loads(data), info

    def read_jsonl(self, run_id: str, *parts: str) -> list[Any]:
        """Every complete line of a JSONL file that parses (a torn or bad line is skipped)."""
        try:
            data, _ = self.read_bytes(run_id, *parts)
        except FileNotFoundError:
            return []
        return list(_parse_lines(data[: data.rfind(b"\n") + 1]))

    def run_ids(self) -> list[str]:
        """Ids of the entries under the root that are real directories with a valid run id."""
        ids = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    ids.append(validate_run_id(entry.name))
            except (OSError, InvalidRunIdError):
                continue
        return sorted(ids)


def check_component(name: str) -> str:
    """One path component: not empty, not ``.``/``..``, no slash or NUL."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"path component {name[:40]!r} is not allowed")
    return name


def split_relative(path: str) -> list[str]:
    """A relative URL path (``a/b.png``) as checked components."""
    parts = path.split("/")
    if len(parts) > MAX_PATH_PARTS:
        raise UnsafePathError("path is too deep")
    return [check_component(part) for part in parts]


def _open_below(parent: int, name: str, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise UnsafePathError(f"{name!r} is a symbolic link or not a directory; it is not served") from None
        raise


def _parse_lines(data: bytes) -> Iterator[Any]:
    for line in data.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
