"""Each reference model trains for 3 real CPU epochs, logs its metrics, improves, and reloads."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from trackbridge.reference import REFERENCE_TASKS, build_reference
from conftest import DESIGN_TASKS

EPOCHS = 3
# Far above the few seconds a run takes, so only a gross slow-down fails on a busy machine.
SECONDS_BUDGET = 60.0


class EpochRecorder(pl.Callback):
    """Copies ``trainer.callback_metrics`` at the end of every training epoch (after validation)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


@dataclass
class TrainedRun:
    task: str
    model: pl.LightningModule
    data: pl.LightningDataModule
    epochs: list[dict[str, float]]
    seconds: float
    checkpoint: Path


def _trainer(callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


@pytest.fixture(scope="module", params=REFERENCE_TASKS)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One 3-epoch run per task, shared by the tests below."""
    task = request.param
    model, data = build_reference(task, seed=0)
    recorder = EpochRecorder()
    trainer = _trainer([recorder])
    # One intra-op thread: these models are too small to gain from more, and on a shared
    # 2-core machine a second busy-waiting thread can make a run many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice about workers and log intervals
            trainer.fit(model, data)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    checkpoint = tmp_path_factory.mktemp(task) / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    return TrainedRun(task, model, data, recorder.epochs, seconds, checkpoint)


def test_reference_tasks_are_the_seven_of_the_task_table() -> None:
    assert REFERENCE_TASKS == tuple(DESIGN_TASKS)


def test_reference_tasks_agree_with_trackbridge_task_specs() -> None:
    tasks = pytest.importorskip("trackbridge.tasks")
    assert tuple(tasks.TASKS) == REFERENCE_TASKS
    for name, (monitor, mode) in DESIGN_TASKS.items():
        assert (tasks.TASKS[name].monitor, tasks.TASKS[name].mode) == (monitor, mode)


def test_build_reference_unknown_task_lists_the_seven() -> None:
    with pytest.raises(ValueError) as excinfo:
        build_reference("pose_estimation")
    for task in REFERENCE_TASKS:
        assert task in str(excinfo.value)


@pytest.mark.parametrize("task", REFERENCE_TASKS)
def test_build_reference_steps_per_epoch_sets_train_batches(task: str) -> None:
    _, data = build_reference(task, steps_per_epoch=7, batch_size=4)
    loader = data.train_dataloader()
    assert len(loader) == 7
    assert len(next(iter(loader))[0]) == 4


@pytest.mark.parametrize("task", REFERENCE_TASKS)
def test_build_reference_same_seed_same_data_and_weights(task: str) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    model_a, data_a = build_reference(task, seed=5)
    assert torch.equal(torch.rand(1), before), "building must not consume the global RNG"
    model_b, data_b = build_reference(task, seed=5)
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p_a, p_b)
    batch_a, batch_b = next(iter(data_a.train_dataloader())), next(iter(data_b.train_dataloader()))
    assert torch.equal(batch_a[0], batch_b[0])
    _, data_c = build_reference(task, seed=6)
    val_a, val_c = next(iter(data_a.val_dataloader()))[0], next(iter(data_c.val_dataloader()))[0]
    assert not torch.equal(val_a, val_c), "another seed must give other data"


def test_reference_model_logs_monitor_and_losses(trained: TrainedRun) -> None:
    monitor, _ = DESIGN_TASKS[trained.task]
    assert len(trained.epochs) == EPOCHS
    for metrics in trained.epochs:
        for key in (monitor, "train_loss", "val_loss"):
            assert key in metrics, f"{trained.task}: {key} not logged; got {sorted(metrics)}"
            assert torch.isfinite(torch.tensor(metrics[key])), f"{trained.task}: {key} = {metrics[key]}"
    if trained.task == "classification":
        assert "val_f1" in trained.epochs[-1]


def test_reference_model_improves_monitor(trained: TrainedRun) -> None:
    monitor, mode = DESIGN_TASKS[trained.task]
    first, last = trained.epochs[0][monitor], trained.epochs[-1][monitor]
    if mode == "max":
        assert last > first, f"{trained.task}: {monitor} {first:.4f} -> {last:.4f}"
    else:
        assert last < first, f"{trained.task}: {monitor} {first:.4f} -> {last:.4f}"
    # Training itself went somewhere too.
    assert trained.epochs[-1]["train_loss"] < trained.epochs[0]["train_loss"]


def test_reference_model_trains_three_epochs_quickly(trained: TrainedRun) -> None:
    seconds = trained.seconds
    assert seconds < SECONDS_BUDGET, f"{trained.task}: {seconds:.1f}s for {EPOCHS} epochs"


def test_reference_model_checkpoint_reproduces_forward(trained: TrainedRun) -> None:
    cls = type(trained.model)
    first = cls.load_from_checkpoint(trained.checkpoint, map_location="cpu")
    second = cls.load_from_checkpoint(trained.checkpoint, map_location="cpu")
    assert dict(first.hparams) == dict(trained.model.hparams)
    x = next(iter(trained.data.val_dataloader()))[0]
    trained.model.eval()
    first.eval()
    second.eval()
    with torch.no_grad():
        expected = trained.model(x)
        torch.testing.assert_close(first(x), expected)
        torch.testing.assert_close(second(x), first(x))


def test_reference_model_test_step_logs_test_loss_and_metric(trained: TrainedRun) -> None:
    monitor, _ = DESIGN_TASKS[trained.task]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [metrics] = _trainer([]).test(trained.model, trained.data, verbose=False)
    name = "test_" + monitor.removeprefix("val_")
    assert {"test_loss", name} <= set(metrics), f"{trained.task}: got {sorted(metrics)}"
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("test_loss", name))
    assert 0 < len(trained.data.test_set) < len(trained.data.train_set)


@pytest.mark.parametrize("task", REFERENCE_TASKS)
def test_reference_test_split_is_held_out(task: str) -> None:
    _, data = build_reference(task, seed=0)
    def rows(dataset):
        return {tuple(torch.as_tensor(dataset[i][0]).flatten().tolist()) for i in range(len(dataset))}
    test = rows(data.test_set)
    assert test and not test & rows(data.val_set) and not test & rows(data.train_set)
