"""The render process (issue 12's cost target): one helper process per run draws and encodes the media.

Real trainings, a real helper process found by its command line, real signals: it draws the
figures, leaves nothing behind after the run or after a SIGKILL of the training, and when it
cannot start or dies the media thread draws instead, said once.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import psutil
import pytest
import torch

from trackbridge.callbacks.guard import TrackingErrors
from trackbridge.callbacks.media_recorder import MediaRecorder
from trackbridge.media import MediaJob, Rendered, RunMedia
from trackbridge.media.frames import dumps, loads
from trackbridge.media.images import encode_png, to_pil
from trackbridge.record.media import MediaKind
from trackbridge.reference import build_reference

from conftest import wait_until
from test_media import media_lines

PACED_TRAINING = Path(__file__).with_name("paced_training.py")
WORKER = "trackbridge.media.render_worker"


def render_workers(pid: int | None = None) -> list[psutil.Process]:
    """Live render processes among the descendants of ``pid`` (default: this process)."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if WORKER in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def fit_regression(recorder: MediaRecorder, epochs: int, *extra: pl.Callback) -> None:
    model, data = build_reference("regression", seed=0, steps_per_epoch=2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[recorder, *extra])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, data)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "render process failed" in r.getMessage()]


class WorkerCount(pl.Callback):
    """The number of render processes at the end of each training epoch."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seen.append(len(render_workers()))


def test_render_process_draws_the_figures_and_is_gone_after_the_run(tmp_path: Path) -> None:
    recorder = MediaRecorder(tmp_path / "run", "regression")
    count = WorkerCount()
    fit_regression(recorder, 3, count)
    assert count.seen == [1, 1, 1]  # one helper for the run, started with it, kept for it
    assert render_workers() == []  # and gone when fit returns
    drawer = recorder.media.writer.drawer
    assert not drawer.fell_back and drawer.process_cpu_s > 0
    # the media thread only pickled the jobs and wrote the files: a small part of the drawing's CPU
    assert recorder.media.writer.thread_cpu_s < drawer.process_cpu_s
    assert [e["step"] for e in media_lines(tmp_path / "run")] == [1, 2, 3]


def test_render_process_keeps_the_order_of_the_jobs(tmp_path: Path) -> None:
    media = RunMedia(tmp_path, failures=TrackingErrors())
    for step in range(4):
        for key in ("b", "a"):
            media.log_image(key, [np.full((16, 16), 40 * step, np.uint8)], step=step, caption=f"{key}{step}")
    media.close(60)
    assert [e["caption"] for e in media_lines(tmp_path)] == [f"{k}{s}" for s in range(4) for k in ("b", "a")]


def test_render_process_ends_when_the_training_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the training (no cleanup code runs): the render process notices and exits."""
    runs = tmp_path / "runs"
    train = subprocess.Popen(
        [sys.executable, str(PACED_TRAINING), str(runs), "killed", "--task", "regression", "--epochs", "200",
         "--steps-per-epoch", "4", "--pace", "0.05"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (runs / "killed" / "media.jsonl").exists(), 120, "the first figure")
        workers = render_workers(train.pid)
        assert len(workers) == 1
        train.kill()
        train.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == [], "the render process outlived its training"
    finally:
        if train.poll() is None:
            train.kill()


def test_media_are_drawn_on_the_media_thread_when_the_render_process_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A real failure of a new interpreter (its standard library is not where it looks).
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "no-python-here"))
    errors = TrackingErrors()
    media = RunMedia(tmp_path, failures=errors)
    with caplog.at_level(logging.WARNING, logger="trackbridge"):
        for step in (1, 2, 3):
            media.log_image("x", [np.full((16, 16), 60 * step, np.uint8)], step=step)
        media.close(60)
    assert [e["step"] for e in media_lines(tmp_path)] == [1, 2, 3]  # nothing lost
    [warning] = fallback_warnings(caplog)
    assert "did not start" in warning and "media thread" in warning
    assert errors.count == 0 and media.writer.drawer.fell_back


class KillWorkerAt(pl.Callback):
    """At the start of epoch ``epoch`` (1-based), with the media so far written, SIGKILL the render process."""

    def __init__(self, recorder: MediaRecorder, epoch: int) -> None:
        self.recorder, self.epoch, self.killed = recorder, epoch, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            self.recorder.media.flush(60)
            for proc in render_workers():
                proc.kill()
                proc.wait(10)
                self.killed += 1


def test_a_killed_render_process_leaves_the_rest_to_the_media_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = MediaRecorder(tmp_path / "run", "regression")
    killer = KillWorkerAt(recorder, 3)
    with caplog.at_level(logging.WARNING, logger="trackbridge"):
        fit_regression(recorder, 4, killer)
    assert killer.killed == 1
    assert [e["step"] for e in media_lines(tmp_path / "run")] == [1, 2, 3, 4]
    assert len(fallback_warnings(caplog)) == 1
    assert recorder.media.writer.drawer.fell_back and recorder.media.failures.count == 0
    assert render_workers() == []


def test_a_job_that_ends_the_render_process_is_lost_and_the_rest_drawn_on_the_media_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors = TrackingErrors()
    media = RunMedia(tmp_path, failures=errors)
    with caplog.at_level(logging.WARNING, logger="trackbridge"):
        media.log_image("before", [np.full((16, 16), 10, np.uint8)], step=1)
        media.submit(MediaJob("fatal", 1, 1, MediaKind.FIGURE, partial(os._exit, 3)))  # dies drawing it
        media.log_image("after", [np.full((16, 16), 250, np.uint8)], step=1)
        media.close(60)
    assert [e["key"] for e in media_lines(tmp_path)] == ["before", "after"]
    [warning] = fallback_warnings(caplog)
    assert "exited while drawing (exit code 3)" in warning
    assert errors.count == 1  # the lost job (it is not drawn again here: it may be what killed the process)
    assert render_workers() == []


def test_close_that_cannot_wait_ends_a_stuck_render_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    media = RunMedia(tmp_path, failures=TrackingErrors())
    media.submit(MediaJob("slow", 1, 1, MediaKind.FIGURE, partial(time.sleep, 120)))  # a drawing that hangs
    wait_until(lambda: render_workers(), 60, "the render process")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trackbridge"):
        assert media.close(2.0) is False  # it did not finish ...
    assert time.monotonic() - started < 20  # ... and close did not wait for it
    assert render_workers() == []
    assert fallback_warnings(caplog) == []  # ended on purpose: not a failure of the process
    assert not media.writer.drawer.fell_back


def test_a_run_without_media_never_waits_for_the_render_process_it_prepared(tmp_path: Path) -> None:
    media = RunMedia(tmp_path, failures=TrackingErrors())
    media.prepare()  # what the recorder does at the start of fit: the process imports its libraries
    drawer = media.writer.drawer
    # started and known to the drawer (Popen returned), while it still imports its libraries
    wait_until(lambda: drawer.process is not None and drawer.process.alive, 60, "the render process")
    started = time.monotonic()
    assert media.flush(60) is True and media.close(60) is True  # no job: nothing to wait for
    assert time.monotonic() - started < 0.5  # not the seconds of its imports, nor its exit
    assert render_workers() == []
    assert not drawer.fell_back  # ended on purpose: a later job starts a new one


def test_a_figure_that_raises_in_the_render_process_is_reported_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors = TrackingErrors()
    media = RunMedia(tmp_path, failures=errors)
    with caplog.at_level(logging.WARNING, logger="trackbridge"):
        for step in (1, 2, 3):
            media.submit(MediaJob("bad", step, step, MediaKind.FIGURE, partial(math.sqrt, -1.0)))
        media.log_image("good", [np.full((16, 16), 200, np.uint8)], step=1)
        media.close(60)
    assert errors.count == 3
    reported = [r.getMessage() for r in caplog.records if "media.bad" in r.getMessage()]
    assert len(reported) == 1 and "ValueError: math domain error" in reported[0]
    assert [e["key"] for e in media_lines(tmp_path)] == ["good"]
    assert not media.writer.drawer.fell_back  # a job's error is not the process's


def test_a_job_that_cannot_be_pickled_is_drawn_on_the_media_thread(tmp_path: Path) -> None:
    media = RunMedia(tmp_path, failures=TrackingErrors())
    lock = threading.Lock()

    def draw() -> Rendered:  # a local function holding a lock: it cannot travel to another process
        with lock:
            return Rendered(encode_png(to_pil(np.full((8, 8), 90, np.uint8)), 64))

    media.submit(MediaJob("local", 1, 1, MediaKind.IMAGE, draw))
    media.close(60)
    assert [e["key"] for e in media_lines(tmp_path)] == ["local"]
    assert not media.writer.drawer.fell_back


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.bfloat16])
def test_frames_carry_tensors_exactly(dtype: torch.dtype) -> None:
    with torch.inference_mode():  # what Lightning's evaluation loop hands over
        tensor = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
    value = loads(dumps({"t": tensor, "view": tensor.t(), "n": [1, "x"]}))
    assert value["t"].dtype == dtype and torch.equal(value["t"], tensor)
    assert torch.equal(value["view"], tensor.t()) and value["n"] == [1, "x"]
