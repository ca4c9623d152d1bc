"""MediaLog: a run's images under ``media/`` and their index, ``media.jsonl`` (DESIGN §2).

One line per image: ``key, step, epoch, kind, path, width, height, caption, time, data``,
where ``path`` (the image) and ``data`` (a JSON file beside it with the numbers the image
draws, or null) are relative to the run directory. Every file is written atomically and
before its index line, so a reader that finds a line always finds its files. The log
knows encoded bytes only: what drew them (matplotlib, Pillow, Lightning) is not its concern.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path
from typing import Any, Collection, Mapping

from .clock import utc_now_iso
from .jsonio import dumps_strict, read_jsonl, write_bytes_atomic, write_text_atomic
from .jsonl import JsonlAppender

MEDIA_DIR = "media"
MEDIA_JSONL = "media.jsonl"
# The fields of a media.jsonl line, in order (the contract of issue 12).
ENTRY_FIELDS: tuple[str, ...] = (
    "key", "step", "epoch", "kind", "path", "width", "height", "caption", "time", "data",
)
DEFAULT_MAX_BYTES = 200 * 2**20
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
MAX_KEY_LENGTH = 200

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class MediaKind(str, enum.Enum):
    """What made an image: a task figure or ``log_figure`` (``figure``), or ``log_image`` (``image``)."""

    FIGURE = "figure"
    IMAGE = "image"


class MediaLog:
    """Writes a run's media files and appends their index lines, within a byte budget.

    ``max_bytes`` caps the images and data files of the run together (what a resumed run
    already wrote counts). The first item that would pass it is refused, and so is every
    item after it (:attr:`full`). Lines are only ever appended: a resumed run keeps its
    history. Not thread-safe: a run has one media writer thread.
    """

    def __init__(self, run_path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"`max_bytes` must be > 0, got {max_bytes}")
        self.run_path = Path(run_path)
        self.media_dir = self.run_path / MEDIA_DIR
        self.index_path = self.run_path / MEDIA_JSONL
        self.max_bytes = max_bytes
        self.full = False
        self._bytes_used: int | None = None  # read from disk on first use (a resumed run)
        self._taken: set[str] = set()
        self._appender = JsonlAppender(self.index_path)

    @property
    def bytes_used(self) -> int:
        """Bytes of the files under ``media/`` (this run's budget so far)."""
        if self._bytes_used is None:
            self._bytes_used = _folder_bytes(self.media_dir)
        return self._bytes_used

    def add(
        self,
        key: str,
        *,
        step: int,
        epoch: int,
        kind: MediaKind | str,
        image: bytes,
        width: int,
        height: int,
        image_format: str = "png",
        caption: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Write one image (and its data) and index it; returns the media.jsonl entry.

        Returns ``None``, without writing anything, once the budget is spent.
        """
        kind = MediaKind(kind)
        key = validate_key(key)
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"`image_format` can be {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        data_text = dumps_strict(data) + "\n" if data is not None else None
        size = len(image) + (len(data_text.encode("utf-8")) if data_text is not None else 0)
        if self.full or self.bytes_used + size > self.max_bytes:
            self.full = True  # and stays so: media stop at the first item that does not fit
            return None
        stem = self._new_stem(key, step)
        image_path = f"{stem}.{'jpg' if image_format == 'jpeg' else image_format}"
        (self.run_path / image_path).parent.mkdir(parents=True, exist_ok=True)
        data_path = None
        if data_text is not None:
            data_path = f"{stem}.json"
            write_text_atomic(self.run_path / data_path, [data_text])
        write_bytes_atomic(self.run_path / image_path, image)
        entry = {
            "key": key,
            "step": int(step),
            "epoch": int(epoch),
            "kind": kind.value,
            "path": image_path,
            "width": int(width),
            "height": int(height),
            "caption": caption,
            "time": utc_now_iso(),
            "data": data_path,
        }
        self._appender.append(entry, fsync=True)
        self._bytes_used = self.bytes_used + size
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every line of media.jsonl, in order."""
        return list(read_jsonl(self.index_path))

    def last_epoch(self, keys: Collection[str] | None = None) -> int:
        """The latest epoch with an entry (of one of ``keys``), 0 if none: a resumed run adds after it."""
        return max((int(e.get("epoch", 0)) for e in self.entries() if keys is None or e.get("key") in keys), default=0)

    def _new_stem(self, key: str, step: int) -> str:
        """``media/<key folder>/<step>`` and, when that is taken, ``-1``, ``-2``, ..."""
        folder = f"{MEDIA_DIR}/{key_folder(key)}"
        base = f"{folder}/{int(step):06d}"
        stem, n = base, 0
        while stem in self._taken or any(
            (self.run_path / f"{stem}.{ext}").exists() for ext in ("json", "png", "jpg", "webp")
        ):
            n += 1
            stem = f"{base}-{n}"
        self._taken.add(stem)
        return stem

def validate_key(key: str) -> str:
    """A media key: a non-empty string of at most :data:`MAX_KEY_LENGTH` characters."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"a media key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a media key must be at most {MAX_KEY_LENGTH} characters, got {len(key)}")
    return key


def key_folder(key: str) -> str:
    """The folder under ``media/`` for a key: its letters, digits, ``._-``; anything else as ``_``.

    ``val/samples`` becomes ``val_samples``; the result never starts with a dot, so it can be
    neither ``..`` nor a hidden folder.
    """
    return _UNSAFE.sub("_", key).lstrip(".") or "_"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total
