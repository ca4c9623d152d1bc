"""RunMedia: the media of one run — its record, its one writer thread, ``log_image``/``log_figure``.

What the training thread pays: a copy of each image handed to :meth:`RunMedia.log_image`
(resizing and encoding happen in the run's render process), and the rendering of a
figure handed to :meth:`RunMedia.log_figure`. A user's matplotlib figure is not
thread-safe and the caller may change or close it right after the call, so it is rendered
before the call returns; its writing is off the training thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..record.media import DEFAULT_MAX_BYTES, MediaKind, MediaLog, validate_key
from .images import ACCEPTED, EncodedImage, encode_figure, encode_png, snapshot_image, to_pil
from .jobs import MediaJob, Rendered
from .writer import EntryHook, ErrorSink, MediaEntry, MediaWriter

DEFAULT_MAX_SIDE = 1024


class RunMedia:
    """A run's images and figures: ``runs/<id>/media/`` and ``media.jsonl``.

    ``event_hook`` and ``mirror_hook`` (for the ``media`` event and the MLflow mirror) are
    called with each media.jsonl entry after its line is written, on the media thread; they
    may be set after construction. ``failures`` counts and reports, once per kind, what goes
    wrong (a figure that raises, a hook that raises); nothing of it reaches the caller.
    ``render_process=False`` draws on the media thread instead of the run's render process.
    """

    def __init__(
        self,
        run_path: str | os.PathLike[str],
        *,
        failures: ErrorSink,
        max_side: int = DEFAULT_MAX_SIDE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        event_hook: EntryHook | None = None,
        mirror_hook: EntryHook | None = None,
        render_process: bool = True,
    ) -> None:
        if max_side < 1:
            raise ValueError(f"`max_side` must be >= 1 pixel, got {max_side}")
        self.max_side = max_side
        self.event_hook = event_hook
        self.mirror_hook = mirror_hook
        self.epoch = 0  # the epoch in progress (1-based), the default step; 0 before training
        self.failures = failures
        self.record = MediaLog(run_path, max_bytes=max_bytes)
        self.writer = MediaWriter(self.record, self._notify, failures=self.failures, render_process=render_process)

    # -- user-facing -------------------------------------------------------
    def log_image(
        self,
        key: str,
        images: list[Any],
        step: int | None = None,
        caption: str | Sequence[str] | None = None,
    ) -> None:
        """Record ``images`` under ``key`` at ``step`` (default: the epoch in progress).

        ``images`` is a list of numpy arrays, CHW/HWC tensors or PIL images (Lightning's
        ``WandbLogger.log_image``); ``caption`` one string per image, or one for all.
        Each image becomes one media.jsonl line of kind ``image``.
        """
        validate_key(key)
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"`images` must be a list of images ({ACCEPTED}); got {type(images).__name__}")
        captions = _captions(caption, len(images))
        step = self._step(step)
        copies = [snapshot_image(image) for image in images]  # before the caller changes them
        for copy, text in zip(copies, captions):
            render = partial(_render_image, copy, text, self.max_side)
            self.submit(MediaJob(key, step, self.epoch, MediaKind.IMAGE, render))

    def log_figure(self, key: str, figure: Any, step: int | None = None) -> None:
        """Record a matplotlib figure under ``key`` at ``step`` (default: the epoch in progress).

        A figure whose ``savefig`` raises is logged once (per key) and skipped.
        """
        validate_key(key)
        if not callable(getattr(figure, "savefig", None)):
            raise TypeError(f"`figure` must be a matplotlib figure; got {type(figure).__name__}")
        step = self._step(step)
        if self.record.full:
            return  # the budget is spent: no rendering on the training thread for nothing
        try:
            encoded = encode_figure(figure, self.max_side)
        except Exception as exc:  # the user's figure: its failure is not the training's
            self.failures.record("log_figure", key, exc)
            return
        self.submit(MediaJob(key, step, self.epoch, MediaKind.FIGURE, Rendered(encoded)))

    # -- for the recorder --------------------------------------------------
    def submit(self, job: MediaJob) -> bool:
        """Hand a job to the media thread; False if it was dropped (queue full, budget spent)."""
        return self.writer.submit(job)

    def prepare(self) -> None:
        """Start the render process in the background (its imports take seconds) before the first job."""
        self.writer.prepare()

    def flush(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until everything submitted so far is written."""
        return self.writer.flush(timeout)

    def close(self, timeout: float) -> bool:
        """Flush, then stop the media thread (a later job starts it again)."""
        return self.writer.close(timeout)

    def _step(self, step: int | None) -> int:
        if step is None:
            return self.epoch
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"`step` must be an integer >= 0 or None, got {step!r}")
        return step

    def _notify(self, entry: MediaEntry) -> None:
        for name, hook in (("event_hook", self.event_hook), ("mirror_hook", self.mirror_hook)):
            if hook is None:
                continue
            try:
                hook(entry)
            except Exception as exc:
                self.failures.record("media", name, exc)


def _captions(caption: str | Sequence[str] | None, count: int) -> list[str | None]:
    if caption is None or isinstance(caption, str):
        return [caption] * count
    captions = list(caption)
    if len(captions) != count or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"`caption` must be a string or {count} strings (one per image), got {caption!r}")
    return captions


def _render_image(image: Any, caption: str | None, max_side: int) -> Rendered:
    encoded: EncodedImage = encode_png(to_pil(image), max_side)
    return Rendered(encoded, caption)

