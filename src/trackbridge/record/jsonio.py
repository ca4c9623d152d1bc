"""Strict, atomic JSON: every file a browser's ``JSON.parse`` accepts, never half-written."""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator


def to_jsonable(value: Any) -> Any:
    """A copy of ``value`` that strict JSON can hold: NaN and ±Inf become ``None``.

    Tensors, numpy scalars and paths are turned into plain Python values.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalar
        try:
            return to_jsonable(value.item())
        except (ValueError, RuntimeError):
            pass
    if hasattr(value, "items"):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return str(value)


def dumps_strict(value: Any, *, indent: int | None = None) -> str:
    """Serialize ``value`` as strict JSON (``allow_nan=False`` after :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False)


def write_json_atomic(
    path: str | os.PathLike[str], value: Any, *, indent: int | None = 2, fsync: bool = True
) -> None:
    """Write ``value`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    _replace_atomically(path, [dumps_strict(value, indent=indent) + "\n"], fsync=fsync)


def write_text_atomic(path: str | os.PathLike[str], chunks: Iterable[str], *, fsync: bool = True) -> None:
    """Write already-serialized text atomically (the caller made it strict JSON)."""
    _replace_atomically(path, chunks, fsync=fsync)


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read once (``/proc/self/status``; else set-and-restore, under a lock)."""
    global _UMASK
    if _UMASK is None:
        with _UMASK_LOCK:
            if _UMASK is None:
                _UMASK = _read_umask()
    return _UMASK


def _read_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_jsonl(path: str | os.PathLike[str], value: Any, *, fsync: bool = True) -> None:
    """Append one strict-JSON line, keeping the file whole lines only (see :mod:`.jsonl`)."""
    from .jsonl import JsonlAppender

    JsonlAppender(path).append(value, fsync=fsync)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Yield each complete line of a JSON-lines file.

    A last line without its newline (a writer killed mid-append) is skipped:
    it is either being written now or was never finished.
    """
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def write_jsonl_atomic(path: str | os.PathLike[str], values: Iterable[Any]) -> None:
    """Rewrite a JSON-lines file atomically (used to cut a log back on resume)."""
    _replace_atomically(path, (dumps_strict(value) + "\n" for value in values))


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Make the current content of ``path`` durable (fsync through a read-only descriptor); a missing file is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (an image, a numpy file): temp file, fsync, rename."""
    _replace_atomically(path, [data], fsync=fsync, binary=True)


def _replace_atomically(
    path: str | os.PathLike[str], chunks: Iterable[str] | Iterable[bytes], *, fsync: bool = True, binary: bool = False
) -> None:
    """Temp file in the same folder, flush, fsync, ``os.replace``: readers see old or new, never half.

    The file gets the mode any file the user creates gets (0644 under umask
    022), not mkstemp's private 0600: a teammate's server must read it.
    ``fsync=False`` skips the disk sync (the file still survives the
    process being killed; only a power loss can lose the last version).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
