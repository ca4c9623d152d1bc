"""Strict, atomic JSON: every file a browser's ``JSON.parse`` accepts, never half-written."""

from __future__ import annotations

import json
import math
import os
import tempfile
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


def write_json_atomic(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    _replace_atomically(path, [dumps_strict(value, indent=indent) + "\n"])


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_jsonl(path: str | os.PathLike[str], value: Any, *, fsync: bool = True) -> None:
    """Append one strict-JSON line; a reader sees whole lines only (see :func:`read_jsonl`)."""
    line = dumps_strict(value) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


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


def _replace_atomically(path: str | os.PathLike[str], chunks: Iterable[str]) -> None:
    """Temp file in the same folder, flush, fsync, ``os.replace``: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
