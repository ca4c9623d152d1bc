"""media.jsonl entries ↔ MLflow's step-aware image layout under ``images/`` (DESIGN §6, issue 12).

``MlflowClient.log_image(run_id, image, key=..., step=...)`` writes, and the
MLflow UI's Images tab reads::

    images/<key, "/" as "~">+step+<step>+timestamp+<ms>+<uuid>.png              full size
    images/<key, "/" as "~">+step+<step>+timestamp+<ms>+<uuid>+compressed.webp   thumbnail (≤ 256 px)

The mirror writes exactly that, with two differences that make a re-upload
idempotent: the timestamp is the entry's own ``time`` and the uuid is derived
from the entry's ``path`` (unique in a run), so the same entry always lands
on the same names. The entry's ``data`` JSON goes beside it as
``<same stem>.json`` (the UI parses every name under ``images/``, so a file
of another shape there would hide all images; ``.json`` ones it skips).

:func:`media_index` turns such a listing back into media.jsonl-shaped
entries, for a server that reads a run from MLflow alone.
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..record.clock import iso
from .mapping import iso_to_ms

IMAGES_DIR = "images"
THUMBNAIL_SIDE = 256  # MLflow's COMPRESSED_IMAGE_SIZE
COMPRESSED = "compressed"
_SEPARATORS = ("+", "%")  # "%" in MLflow < 3 names; the UI reads both
_BAD_KEY_CHARS = re.compile(r"[^a-zA-Z0-9_\-./ ]")  # what log_image accepts in a key
_NAMESPACE = uuid.UUID("6c1e2b7a-6a57-4f3e-9d0e-5b4f7f2a8c11")


def image_stem(entry: Mapping[str, Any]) -> str:
    """The deterministic file stem of a media.jsonl entry in MLflow's layout."""
    key = _BAD_KEY_CHARS.sub("_", str(entry["key"])).replace("/", "~") or "image"
    step = int(entry.get("step") or 0)
    timestamp = iso_to_ms(entry["time"])
    name = uuid.uuid5(_NAMESPACE, str(entry["path"]))
    return f"{key}+step+{step}+timestamp+{timestamp}+{name}"


def media_files(run_path: Path, entry: Mapping[str, Any], workdir: Path) -> list[Path]:
    """The files to upload under ``images/`` for one entry, written into ``workdir``.

    The full-size image is the entry's own file when it is a PNG (else a PNG
    made from it), the thumbnail a WebP whose longer side is 256 px, and the
    data JSON a copy of the entry's ``data`` file when it has one. Raises
    ``FileNotFoundError`` when the image is gone.
    """
    from PIL import Image

    stem = image_stem(entry)
    source = run_path / str(entry["path"])
    workdir.mkdir(parents=True, exist_ok=True)
    full = workdir / f"{stem}.png"
    thumb = workdir / f"{stem}+{COMPRESSED}.webp"
    with Image.open(source) as image:
        image.load()
        if image.format == "PNG":
            shutil.copyfile(source, full)
        else:
            image.save(full, format="PNG")
        _thumbnail(image).save(thumb, format="WEBP")
    files = [full, thumb]
    if entry.get("data"):
        data = run_path / str(entry["data"])
        if data.is_file():
            copy = workdir / f"{stem}.json"
            shutil.copyfile(data, copy)
            files.append(copy)
    return files


def _thumbnail(image: Any) -> Any:
    width, height = image.size
    scale = THUMBNAIL_SIDE / max(width, height, 1)
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    small = image.resize(size)
    return small if small.mode in ("RGB", "RGBA") else small.convert("RGBA")


def parse_image_name(name: str) -> dict[str, Any] | None:
    """``key``, ``step``, ``timestamp``, ``stem``, ``extension``, ``compressed`` of one file name, or None."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        return None
    separator = next((s for s in _SEPARATORS if s in stem), None)
    if separator is None:
        return None
    parts = stem.split(separator)
    if len(parts) < 6 or parts[1] != "step" or parts[3] != "timestamp":
        return None
    try:
        step, timestamp = int(parts[2]), int(parts[4])
    except ValueError:
        return None
    compressed = parts[-1] == COMPRESSED
    if compressed:
        stem = stem[: -len(separator + COMPRESSED)]
    return {"key": parts[0].replace("~", "/").replace("#", "/"), "step": step, "timestamp": timestamp,
            "stem": stem, "extension": extension.lower(), "compressed": compressed}


def media_index(paths: Iterable[str]) -> list[dict[str, Any]]:
    """media.jsonl-shaped entries from the artifact paths of a run's ``images/`` folder (pure).

    ``path``, ``data`` and ``thumbnail`` are artifact paths. What the names do
    not say is ``null``: ``epoch``, ``width``, ``height``, ``caption``;
    ``kind`` is ``"figure"`` when a data JSON sits beside the image (figures
    carry their numbers), else ``"image"``.
    """
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        folder, _, name = str(path).rpartition("/")
        parsed = parse_image_name(name)
        if parsed is None:
            continue
        prefix = f"{folder}/" if folder else ""
        entry = found.setdefault(parsed["stem"], {
            "key": parsed["key"], "step": parsed["step"], "epoch": None, "kind": "image", "path": None,
            "width": None, "height": None, "caption": None,
            "time": iso(datetime.fromtimestamp(parsed["timestamp"] / 1000, tz=timezone.utc)),
            "data": None, "thumbnail": None, "_ms": parsed["timestamp"],
        })
        if parsed["extension"] == "json":
            entry["data"] = prefix + name
            entry["kind"] = "figure"
        elif parsed["compressed"]:
            entry["thumbnail"] = prefix + name
        elif parsed["extension"] in ("png", "jpeg", "jpg", "webp"):
            entry["path"] = prefix + name
    entries = [e for e in found.values() if e["path"] is not None]
    entries.sort(key=lambda e: (e["_ms"], e["key"], e["step"]))
    for entry in entries:
        del entry["_ms"]
    return entries
