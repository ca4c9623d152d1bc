"""MediaRecorder: task figures from ``validation_step`` outputs → ``media/`` and ``media.jsonl``.

At the end of every ``every_n_epochs``-th validation epoch of ``fit`` (never in Lightning's
sanity check) the task's figures are drawn from what ``validation_step`` returned, in
torchmetrics' input formats (README: "Figures and images"). The training thread keeps
only small detached state per batch; drawing and encoding happen in the run's one render
process, fed by its one media thread, which writes the results
(:class:`trackbridge.media.RunMedia`; it also serves ``log_image`` and ``log_figure``, to
which the stack's logger delegates through the session). Each media.jsonl entry goes to
``event_hook`` — the stack's: a ``media`` event on the session's event channel. Only global rank
zero records. A resumed run keeps its media and draws only epochs after the last one that
has media (history is never rewritten, as for metrics.json).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn

from ..console import announce
from ..events.types import EventType, make_event
from ..media.figures import TASK_FIGURES, FigureContext, OutputsError, TaskFigures, figures_for
from ..media.figures.base import in_inference_mode
from ..media.jobs import MediaJob
from ..media.run_media import DEFAULT_MAX_SIDE, RunMedia
from ..media.writer import EntryHook
from ..record.media import DEFAULT_MAX_BYTES, MediaKind
from .guard import tracking_hook
from .session import RunSession

log = logging.getLogger("trackbridge")


class MediaEvents:
    """An ``event_hook`` that makes each media.jsonl entry a ``media`` event of the session (DESIGN §4).

    The event's fields are the entry's own (its ``time`` too: when the image was written).
    A class rather than a closure, so the recorder holding it still pickles (``ddp_spawn``).
    """

    def __init__(self, session: RunSession) -> None:
        self.session = session

    def __call__(self, entry: dict[str, Any]) -> None:
        self.session.events.put(make_event(0, EventType.MEDIA, self.session.run_id, **entry))


class MediaRecorder(pl.Callback):
    """Record the task's figures every ``every_n_epochs`` validation epochs (0: none).

    ``samples`` images go in each prediction grid; no image is wider or taller than
    ``max_side`` pixels; the run's media stop, with one warning, at ``max_bytes``.
    ``event_hook`` and ``mirror_hook`` are called (on the media thread) with each
    media.jsonl entry once it is written. ``class_names`` default to the module's
    ``class_names`` attribute. ``render_process=False`` draws on the media thread instead
    of a render process (slower for the training; for when processes cannot be started). :attr:`media` is the run's :class:`RunMedia`, whose
    ``log_image``/``log_figure`` a logger delegates to: ``session.media`` of the stack's
    ``session`` (one of its own when None), whose ``errors`` count media failures.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        task: str,
        *,
        every_n_epochs: int = 1,
        samples: int = 8,
        max_side: int = DEFAULT_MAX_SIDE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        event_hook: EntryHook | None = None,
        mirror_hook: EntryHook | None = None,
        class_names: Sequence[str] | None = None,
        flush_timeout_s: float = 60.0,
        session: RunSession | None = None,
        render_process: bool = True,
    ) -> None:
        if task not in TASK_FIGURES:
            raise ValueError(f"`task` can be {', '.join(TASK_FIGURES)}, got {task!r}")
        if every_n_epochs < 0:
            raise ValueError(f"`every_n_epochs` must be 0 (no figures) or more, got {every_n_epochs}")
        if samples < 1:
            raise ValueError(f"`samples` must be >= 1, got {samples}")
        self.task = task
        self.every_n_epochs = every_n_epochs
        self.samples = samples
        self.class_names = tuple(class_names) if class_names is not None else None
        self.flush_timeout_s = flush_timeout_s
        self.session = session or RunSession(None, beats=False)
        self.media = RunMedia(
            run_dir,
            failures=self.session.errors,
            max_side=max_side,
            max_bytes=max_bytes,
            event_hook=event_hook,
            mirror_hook=mirror_hook,
            render_process=render_process,
        )
        self.session.media = self.media
        self.training_thread_s = 0.0  # time this callback spent on the training thread
        self._drawn_epochs = 0  # epochs that already have media (a resumed run)
        self._context: FigureContext | None = None
        self._figures: TaskFigures | None = None
        self._no_outputs = False  # validation_step returns nothing the figures can use

    # -- Lightning hooks (training thread) ---------------------------------
    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._context = self._make_context(trainer, pl_module)

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._drawn_epochs = self.media.record.last_epoch(TASK_FIGURES[self.task].keys)
            if self.every_n_epochs > 0 and trainer.max_epochs != 0:
                self.media.prepare()  # the render process imports its libraries during the first epoch

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.media.epoch = trainer.current_epoch + 1

    @tracking_hook
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with self._timed():
            self._figures = figures_for(self._context) if self._records(trainer) else None

    @tracking_hook
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._figures is None or dataloader_idx != 0:
            return
        with self._timed():
            try:
                self._figures.update(outputs)
            except OutputsError as exc:
                self._stop_figures(exc, outputs)
            except Exception as exc:  # a figure's bookkeeping never fails training
                self.media.failures.record("MediaRecorder", f"{self.task} figures", exc)
                self._figures = None

    @tracking_hook
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._figures is None:
            return
        with self._timed():
            figures, self._figures = self._figures, None
            try:
                renders = figures.finish()
            except Exception as exc:
                self.media.failures.record("MediaRecorder", f"{self.task} figures", exc)
                return
            epoch = trainer.current_epoch + 1
            for key, render in renders.items():
                job = MediaJob(key, epoch, epoch, MediaKind.FIGURE, partial(in_inference_mode, render))
                self.media.submit(job)

    @tracking_hook
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before the stack's terminal event: every media event of the run comes first.
        if not trainer.is_global_zero:
            return
        if not self.media.flush(self.flush_timeout_s):
            announce(f"media still drawing after {self.flush_timeout_s:.0f} s; not waiting longer", log)
        record = self.media.record
        writer = self.media.writer
        log.info(
            "trackbridge: media: %d images written (%.1f MB); %.3f s on the training thread, %.2f s of CPU on "
            "the media thread, %.2f s in the render process; %d failures",
            writer.written, record.bytes_used / 2**20, self.training_thread_s, writer.thread_cpu_s,
            writer.drawer.process_cpu_s, self.media.failures.count,
        )

    @tracking_hook
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._figures = None
        self.media.close(self.flush_timeout_s)

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # After fit, and after a validate/test stage whose hooks logged images: no render process outlives it.
        self.media.close(self.flush_timeout_s)

    # -- helpers -----------------------------------------------------------
    def _records(self, trainer: pl.Trainer) -> bool:
        """Whether this validation epoch draws the task figures."""
        return (
            self.every_n_epochs > 0
            and not self._no_outputs
            and self._context is not None
            and trainer.is_global_zero
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and trainer.current_epoch + 1 > self._drawn_epochs
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def _make_context(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> FigureContext:
        names = self.class_names or getattr(pl_module, "class_names", None) or ()
        num_classes = getattr(pl_module, "hparams", {}).get("num_classes")
        return FigureContext(
            task=self.task,
            class_names=tuple(str(n) for n in names),
            num_classes=num_classes if isinstance(num_classes, int) and not isinstance(num_classes, bool) else None,
            samples=self.samples,
            max_side=self.media.max_side,
            world_size=trainer.world_size,
        )

    def _stop_figures(self, exc: OutputsError, outputs: Any) -> None:
        """No figures for the rest of the run: the module does not return what they need."""
        self._figures = None
        self._no_outputs = True
        if outputs is None:  # a module that never opted in: say so quietly
            log.info("trackbridge: no %s figures: validation_step returns nothing (README: Figures and images)", self.task)
        else:
            announce(f"no {self.task} figures for this run: {exc}", log)

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.training_thread_s += time.perf_counter() - start

