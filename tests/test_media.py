"""Media (issue 12): task figures from real 3-epoch trainings, true to the logged metrics;
log_image / log_figure; the byte budget; the media record's contract."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from trackbridge import TrackingConfig, build_callbacks
from trackbridge.callbacks.guard import TrackingErrors
from trackbridge.callbacks.media_recorder import MediaRecorder
from trackbridge.media import RunMedia
from trackbridge.record.media import MediaLog
from trackbridge.reference import REFERENCE_TASKS, build_reference

from conftest import REPO
from tiny import TinyRegressor, tiny_loaders, tiny_trainer

EPOCHS = 3
# Issue 12's required keys per task: what media.jsonl must list at steps 1, 2, 3.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "classification": ("confusion_matrix",),
    "anomaly_detection": ("roc_curve", "score_histogram"),
    "object_detection": ("pr_curve", "predictions"),
    "oriented_object_detection": ("pr_curve", "predictions"),
    "segmentation": ("predictions", "per_class_iou"),
    "instance_segmentation": ("predictions",),
    "regression": ("pred_vs_true",),
}
# The fields each key's data file must hold (issue 12).
DATA_FIELDS: dict[str, tuple[str, ...]] = {
    "confusion_matrix": ("labels", "matrix"),
    "roc_curve": ("fpr", "tpr", "thresholds"),
    "score_histogram": ("labels", "scores"),
    "pr_curve": ("labels", "recall", "precision"),
    "per_class_iou": ("labels", "iou"),
    "pred_vs_true": ("pred", "true"),
}
ENTRY_FIELDS = ["key", "step", "epoch", "kind", "path", "width", "height", "caption", "time", "data"]
MIN_PIXEL_STD = 5.0  # out of 255: a blank or single-colour image is below it


def strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def media_lines(run_dir: Path) -> list[dict]:
    """media.jsonl read here, independently of the code under test."""
    return [strict_json(line) for line in (run_dir / "media.jsonl").read_text().splitlines()]


@dataclass
class MediaRun:
    task: str
    run_dir: Path
    entries: list[dict]
    epochs: list[dict]  # metrics.json's epoch records


@pytest.fixture(scope="module", params=REFERENCE_TASKS)
def media_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MediaRun:
    """One 3-epoch run per task with the whole stack (MLflow off), shared by the checks below."""
    task = request.param
    config = TrackingConfig(task=task, runs_root=tmp_path_factory.mktemp(f"media-{task}"), mlflow=False)
    stack = build_callbacks(config)
    model, data = build_reference(task, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=EPOCHS, callbacks=stack, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a second busy thread only slows a shared machine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, data)
    finally:
        torch.set_num_threads(threads)
    run_dir = stack.run_dir.path
    epochs = strict_json((run_dir / "metrics.json").read_text())["epochs"]
    return MediaRun(task, run_dir, media_lines(run_dir), epochs)


def entry(run: MediaRun, key: str, step: int) -> dict:
    [found] = [e for e in run.entries if e["key"] == key and e["step"] == step]
    return found


def data_of(run: MediaRun, key: str, step: int) -> dict:
    return strict_json((run.run_dir / entry(run, key, step)["data"]).read_text())


def test_media_lists_the_task_keys_at_every_step(media_run: MediaRun) -> None:
    got = {(e["key"], e["step"]) for e in media_run.entries}
    expected = {(k, s) for k in REQUIRED_KEYS[media_run.task] for s in range(1, EPOCHS + 1)}
    assert expected <= got, f"{media_run.task}: missing {sorted(expected - got)}"
    # one figure per key and epoch; none from Lightning's sanity check (it would be step 0)
    assert len(media_run.entries) == len(got) == len(expected)
    for e in media_run.entries:
        assert list(e) == ENTRY_FIELDS
        assert e["kind"] == "figure" and e["epoch"] == e["step"]
        assert e["path"].startswith("media/") and e["time"].endswith("Z")


def test_media_images_decode_and_are_not_blank(media_run: MediaRun) -> None:
    for e in media_run.entries:
        with Image.open(media_run.run_dir / e["path"]) as image:
            image.load()
            assert image.size == (e["width"], e["height"])
            assert max(image.size) <= 1024
            std = float(np.asarray(image.convert("L"), dtype=np.float64).std())
        assert std > MIN_PIXEL_STD, f"{e['path']} looks blank (pixel std {std:.2f})"


def test_media_data_files_parse_strictly_and_hold_the_numbers(media_run: MediaRun) -> None:
    for e in media_run.entries:
        if e["data"] is None:
            assert e["key"] == "predictions"  # mask overlays: the image is the data
            continue
        assert e["data"].startswith("media/") and e["data"].endswith(".json")
        data = strict_json((media_run.run_dir / e["data"]).read_text())
        for field in DATA_FIELDS.get(e["key"], ()):
            assert field in data, f"{e['key']}: {field} missing from {sorted(data)}"


def test_media_figures_agree_with_the_logged_metrics(media_run: MediaRun) -> None:
    """Every epoch: the figure's own numbers give back the metric in metrics.json."""
    task = media_run.task
    for record in media_run.epochs:
        step = record["epoch"]
        if task == "classification":
            matrix = np.array(data_of(media_run, "confusion_matrix", step)["matrix"], dtype=np.float64)
            support = matrix.sum(axis=1)
            seen = support + matrix.sum(axis=0) > 0
            recall = np.divide(np.diag(matrix), support, out=np.zeros(len(matrix)), where=support > 0)
            assert matrix.sum() == 360  # the whole validation set, every epoch
            assert recall[seen].mean() == pytest.approx(record["val_accuracy"], abs=1e-6)
        elif task == "anomaly_detection":
            roc = data_of(media_run, "roc_curve", step)
            assert not roc["thinned"]
            area = np.trapezoid(roc["tpr"], roc["fpr"])
            assert area == pytest.approx(record["val_auroc"], abs=1e-6)
            hist = data_of(media_run, "score_histogram", step)
            assert [len(s) for s in hist["scores"]] == [sum(c) for c in hist["counts"]]
        elif task == "segmentation":
            iou = [v for v in data_of(media_run, "per_class_iou", step)["iou"] if v is not None]
            assert np.mean(iou) == pytest.approx(record["val_mIoU"], abs=1e-6)
        elif task == "regression":
            points = data_of(media_run, "pred_vs_true", step)
            pred, true = np.array(points["pred"]), np.array(points["true"])
            assert len(pred) == len(true) == 88
            assert np.abs(pred - true).mean() == pytest.approx(record["val_mae"], rel=1e-5)
        elif task in ("object_detection", "oriented_object_detection"):
            # Beyond the list: the PR curve's mean AP is the logged COCO AP@0.5.
            curve = data_of(media_run, "pr_curve", step)
            assert len(curve["recall"][0]) == len(curve["precision"][0]) == 101
            ap = [np.mean(p) for p in curve["precision"]]
            assert np.mean(ap) == pytest.approx(record["val_mAP_50"], abs=1e-6)
        if "predictions" in REQUIRED_KEYS[task]:
            grid = entry(media_run, "predictions", step)
            assert "8 validation samples" in grid["caption"]


def test_media_events_are_the_entries_before_the_terminal_event(media_run: MediaRun) -> None:
    """Each media.jsonl line is a `media` event (DESIGN §4) whose fields are the entry's, ahead of the run's end."""
    events = [strict_json(line) for line in (media_run.run_dir / "events.jsonl").read_text().splitlines()]
    media = [e for e in events if e["type"] == "media"]
    assert [{k: e[k] for k in ENTRY_FIELDS} for e in media] == media_run.entries
    assert all(e["run_id"] == media_run.run_dir.name for e in media)
    terminal = next(i for i, e in enumerate(events) if e["type"] == "training_complete")
    assert max(events.index(e) for e in media) < terminal


# -- log_image / log_figure -----------------------------------------------------------


class PictureRegressor(TinyRegressor):
    """TinyRegressor that logs images and a figure of its own at the end of each validation."""

    def __init__(self, media: RunMedia) -> None:
        super().__init__()
        self.media = media

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        gradient = np.linspace(0, 255, 48 * 64, dtype=np.float64).reshape(48, 64).astype(np.uint8)
        images = [
            np.stack([gradient] * 3, axis=-1),  # HWC uint8
            torch.rand(3, 40, 30),  # CHW float in [0, 1]
            Image.fromarray(gradient),  # PIL, grey
        ]
        self.media.log_image("samples", images, caption=["hwc", "chw", "pil"])
        figure = Figure(figsize=(3, 2), dpi=100)
        FigureCanvasAgg(figure)
        figure.add_subplot().plot([0, 1, 2], [float(self.current_epoch), 1.0, 0.0])
        self.media.log_figure("curve", figure)


def test_log_image_and_log_figure_from_a_module(tmp_path: Path) -> None:
    recorder = MediaRecorder(tmp_path, "regression")
    train, val = tiny_loaders()
    pickle.dumps(recorder)  # the stack pickles for ddp_spawn (issue 13)
    tiny_trainer([recorder], max_epochs=2, default_root_dir=tmp_path).fit(PictureRegressor(recorder.media), train, val)
    pickle.loads(pickle.dumps(recorder))
    lines = media_lines(tmp_path)
    images = [e for e in lines if e["key"] == "samples"]
    assert [(e["step"], e["caption"]) for e in images] == [(s, c) for s in (1, 2) for c in ("hwc", "chw", "pil")]
    assert all(e["kind"] == "image" and e["data"] is None for e in images)
    assert [(e["width"], e["height"]) for e in images[:3]] == [(64, 48), (30, 40), (64, 48)]
    assert len({e["path"] for e in images}) == 6  # three images at one step: three files
    figures = [e for e in lines if e["key"] == "curve"]
    assert [(e["step"], e["kind"], (e["width"], e["height"])) for e in figures] == [(1, "figure", (300, 200)), (2, "figure", (300, 200))]
    for e in lines:
        with Image.open(tmp_path / e["path"]) as image:
            assert image.size == (e["width"], e["height"])


def test_log_image_refuses_what_is_not_a_list_of_images(tmp_path: Path) -> None:
    media = RunMedia(tmp_path, failures=TrackingErrors())
    with pytest.raises(TypeError, match="must be a list"):
        media.log_image("x", np.zeros((4, 4)))
    with pytest.raises(TypeError, match="numpy array, a torch tensor"):
        media.log_image("x", ["not an image"])
    with pytest.raises(ValueError, match="one per image"):
        media.log_image("x", [np.zeros((4, 4))], caption=["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        media.log_image("", [np.zeros((4, 4))])


FAILING_FIGURE_SCRIPT = textwrap.dedent(
    """
    import sys
    import lightning.pytorch as pl
    import numpy as np
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from trackbridge import TrackingConfig, build_callbacks
    from tiny import TinyRegressor, tiny_loaders

    class Exploding(Artist):
        def draw(self, renderer):
            raise RuntimeError("this artist cannot be drawn")

    class Module(TinyRegressor):
        def on_validation_epoch_end(self):
            if self.trainer.sanity_checking:
                return
            bad = Figure()
            bad.add_artist(Exploding())
            self.logger.log_figure("broken", bad)
            self.logger.log_image("after", [np.full((8, 8), self.current_epoch * 80, np.uint8)])

    stack = build_callbacks(TrackingConfig(task="regression", runs_root=sys.argv[1], run_id="bad", mlflow=False))
    train, val = tiny_loaders()
    trainer = pl.Trainer(max_epochs=3, callbacks=stack, logger=stack.logger, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), train, val)
    """
)


def test_log_figure_that_raises_on_save_leaves_training_outcome_unchanged(tmp_path: Path) -> None:
    script = tmp_path / "train_bad_figure.py"
    script.write_text(FAILING_FIGURE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "bad"
    run = strict_json((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["epochs_done"] == 3 and run["error"] is None
    # said once although it failed every epoch, counted every time; the media after it are all there
    log_text = (run_dir / "logs" / "training.log").read_text()
    assert log_text.count("log_figure.broken (RuntimeError: this artist cannot be drawn)") == 1
    assert log_text.count("RuntimeError") == 1 and "log_figure.broken" in done.stderr
    assert run["tracking_errors"] == 3
    assert [(e["key"], e["step"]) for e in media_lines(run_dir)] == [("after", 1), ("after", 2), ("after", 3)]


# -- budget and record ----------------------------------------------------------------


def test_media_budget_stops_media_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # ~12 KB as PNG
    media = RunMedia(tmp_path, failures=TrackingErrors(), max_bytes=40_000)
    with caplog.at_level(logging.WARNING, logger="trackbridge"):
        for step in range(10):
            media.log_image("noise", [noise], step=step)
            media.flush(30)
        media.close(30)
    written = media_lines(tmp_path)
    assert 1 <= len(written) < 10
    assert [e["step"] for e in written] == list(range(len(written)))  # nothing after the first refusal
    on_disk = sum(p.stat().st_size for p in (tmp_path / "media").rglob("*") if p.is_file())
    assert on_disk <= 40_000
    warnings_seen = [r for r in caplog.records if "media budget" in r.getMessage()]
    assert len(warnings_seen) == 1


def test_media_log_entries_files_and_resume(tmp_path: Path) -> None:
    record = MediaLog(tmp_path)
    png = _png(8, 6)
    first = record.add("val/../../escape", step=1, epoch=1, kind="image", image=png, width=8, height=6,
                       data={"x": [1.0, float("nan")]})
    again = record.add("val/../../escape", step=1, epoch=1, kind="image", image=png, width=8, height=6)
    later = record.add("other", step=2, epoch=2, kind="figure", image=png, width=8, height=6)
    # a key never leads out of media/; the same key and step gets a second file
    assert first["path"] == "media/val_.._.._escape/000001.png" and again["path"] == "media/val_.._.._escape/000001-1.png"
    assert strict_json((tmp_path / first["data"]).read_text()) == {"x": [1.0, None]}
    assert [e["key"] for e in media_lines(tmp_path)] == ["val/../../escape", "val/../../escape", "other"]
    # a reopened log (a resumed run) knows what it holds: it only ever appends
    assert MediaLog(tmp_path).last_epoch() == 2 and MediaLog(tmp_path).last_epoch({"val/../../escape"}) == 1
    assert MediaLog(tmp_path).bytes_used == sum(p.stat().st_size for p in (tmp_path / "media").rglob("*") if p.is_file())
    assert (tmp_path / later["path"]).is_file()
    # a torn last line (a crash mid-append) is cut before the next append
    with open(tmp_path / "media.jsonl", "a") as fh:
        fh.write('{"key": "torn"')
    MediaLog(tmp_path).add("next", step=3, epoch=3, kind="image", image=png, width=8, height=6)
    assert [e["key"] for e in media_lines(tmp_path)][-1] == "next"


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("media_every_n_epochs", -1, "0 \\(no task figures\\) or a positive number"),
        ("media_samples", 0, "positive number of validation images"),
        ("media_max_side", 10, "at least 64 pixels"),
        ("media_max_bytes", 0, "positive number of bytes"),
        ("media_samples", 2.5, "must be an integer"),
    ],
)
def test_config_media_fields_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackingConfig(task="regression", **{field: value})


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_media_figures_are_off_with_every_n_epochs_zero(tmp_path: Path) -> None:
    recorder = MediaRecorder(tmp_path, "regression", every_n_epochs=0)
    train, val = tiny_loaders()
    tiny_trainer([recorder], max_epochs=1, default_root_dir=tmp_path).fit(TinyRegressor(), train, val)
    assert not (tmp_path / "media.jsonl").exists()
    assert math.isclose(recorder.training_thread_s, 0.0, abs_tol=0.05)


def test_media_of_a_resumed_run_are_kept_and_continued(tmp_path: Path) -> None:
    def fit(epochs: int, ckpt_path: Path | None = None) -> pl.Trainer:
        model, data = build_reference("regression", seed=0, steps_per_epoch=2)
        trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path,
                             callbacks=[MediaRecorder(tmp_path / "run", "regression")])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, data, ckpt_path=ckpt_path)
        return trainer

    first = fit(2)
    checkpoint = tmp_path / "epoch2.ckpt"
    first.save_checkpoint(checkpoint)
    before = media_lines(tmp_path / "run")
    fit(3, checkpoint)
    after = media_lines(tmp_path / "run")
    assert after[: len(before)] == before  # history is never rewritten
    assert [e["step"] for e in after] == [1, 2, 3]
