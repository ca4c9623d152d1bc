"""The callback stack on a real Trainer: files, lifecycle, events, faults."""

from __future__ import annotations

import json
import queue

import pytest
import torch

from trackbridge import (
    JSONMetricLogger,
    RunDirectory,
    RunExistsError,
    RunStatusUpdater,
    SSENotifier,
    TrackingConfig,
    build_callbacks,
)
from trackbridge.callbacks.checkpoints import best_checkpoint, last_checkpoint

from tiny import TinyRegressor, tiny_loaders, tiny_trainer


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def local_config(runs_root, **kwargs) -> TrackingConfig:
    return TrackingConfig(task="regression", runs_root=runs_root, mlflow=False, **kwargs)


def fit(stack, module=None, epochs=3, **trainer_kwargs):
    train, val = tiny_loaders()
    trainer = tiny_trainer(stack, max_epochs=epochs, **trainer_kwargs)
    trainer.fit(module or TinyRegressor(), train, val)
    return trainer


def events_of(run: RunDirectory) -> list[dict]:
    return [strict_loads(line) for line in run.events_jsonl.read_text().splitlines()]


def test_stack_contains_the_design_callbacks(runs_root):
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from trackbridge.callbacks.composite import TrackbridgeCallback

    stack = build_callbacks(local_config(runs_root, run_id="s1"))
    kinds = [type(cb).__name__ for cb in stack.parts]
    for name in ("JSONMetricLogger", "RunStatusUpdater", "SSENotifier", "LearningRateMonitor", "EarlyStopping"):
        assert name in kinds
    # trackbridge's parts reach the Trainer as one callback: Lightning's per-callback cost is paid once
    assert [type(cb).__name__ for cb in stack] == ["TrackbridgeCallback", "EarlyStopping", "ModelCheckpoint", "ModelCheckpoint"]
    assert isinstance(stack[0], TrackbridgeCallback)
    checkpoints = [cb for cb in stack.parts if isinstance(cb, ModelCheckpoint)]
    assert [(c.monitor, c.mode, c.filename) for c in checkpoints] == [("val_mae", "min", "best"), (None, "min", "last")]
    early = next(cb for cb in stack.parts if isinstance(cb, EarlyStopping))
    assert (early.monitor, early.mode, early.min_delta, early.patience) == ("val_loss", "min", -1e-4, 10)
    lr = next(cb for cb in stack.parts if isinstance(cb, LearningRateMonitor))
    assert lr.logging_interval == "epoch"
    off = build_callbacks(local_config(runs_root, run_id="s2", early_stopping_patience=0))
    assert not any(isinstance(cb, EarlyStopping) for cb in off)


def test_stack_records_a_completed_run(runs_root):
    stack = build_callbacks(local_config(runs_root, run_id="ok"))
    fit(stack)
    run = stack.run_dir
    info = strict_loads(run.run_json.read_text())
    assert info["status"] == "completed" and info["task"] == "regression"
    assert (info["monitor"], info["mode"]) == ("val_mae", "min")
    epochs = strict_loads(run.metrics_json.read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for record in epochs:
        assert {"train_loss", "val_loss", "val_mae", "lr", "duration_s", "time"} <= set(record)
        assert record["duration_s"] > 0
    best = min(epochs, key=lambda e: e["val_mae"])
    assert info["best_epoch"] == best["epoch"] and info["best_score"] == best["val_mae"]
    assert isinstance(info["best_epoch"], int) and isinstance(info["best_score"], float)
    assert info["final_metrics"]["val_mae"] == epochs[-1]["val_mae"]
    for key in ("created_at", "started_at", "completed_at", "heartbeat_at"):
        assert info[key].endswith("Z")
    assert info["pid"] > 0 and info["host"]
    events = events_of(run)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "training_complete"
    assert types.count("epoch_end") == 3 and sum(t.startswith("training_") for t in types) == 1
    epoch_events = [e for e in events if e["type"] == "epoch_end"]
    for event, record in zip(epoch_events, epochs):
        assert event["epoch"] == record["epoch"] and event["max_epochs"] == 3 and event["run_id"] == "ok"
        assert event["metrics"] == {k: v for k, v in record.items() if k not in ("epoch", "time")}
    assert any(e["type"] == "checkpoint_saved" and e["name"] == "best" for e in events)
    assert run.training_log.read_text().strip()
    assert "memory" in run.training_log.read_text()
    steps = [strict_loads(line) for line in run.steps_jsonl.read_text().splitlines()]
    assert all(isinstance(s["step"], int) for s in steps)
    # every logged training step (log_every_n_steps=2, 8 batches an epoch), plus LearningRateMonitor's direct calls
    assert [s["step"] for s in steps if "train_loss_step" in s] == list(range(1, 24, 2))
    assert [s["step"] for s in steps if "lr-SGD" in s] == [0, 8, 16]


def test_last_ckpt_is_the_most_recent_epoch_even_when_best_is_older(runs_root):
    """Lightning's single ModelCheckpoint(save_last=True) would leave last.ckpt at the best epoch."""

    class PeaksEarly(TinyRegressor):
        def validation_step(self, batch, batch_idx):
            super().validation_step(batch, batch_idx)
            # the monitor (max here) is best in epoch 1 and worse after it
            self.log("score", torch.tensor(1.0 / (1 + self.current_epoch)))

    config = TrackingConfig(task="classification", runs_root=runs_root, run_id="peak", mlflow=False,
                            monitor="score", mode="max")
    stack = build_callbacks(config)
    fit(stack, PeaksEarly())
    run = stack.run_dir
    info = run.read_run()
    assert info["best_epoch"] == 1 and info["best_score"] == 1.0
    best = torch.load(run.best_ckpt, weights_only=False)
    last = torch.load(run.last_ckpt, weights_only=False)
    assert best["epoch"] == 0 and last["epoch"] == 2
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["best.ckpt", "last.ckpt"]
    TinyRegressor.load_from_checkpoint(run.best_ckpt)
    TinyRegressor.load_from_checkpoint(run.last_ckpt)


def test_failing_training_step_marks_the_run_failed(runs_root):
    stack = build_callbacks(local_config(runs_root, run_id="bad"))
    with pytest.raises(RuntimeError, match="boom"):
        fit(stack, TinyRegressor(fail_at_step=12))  # 8 batches an epoch: fails in epoch 2
    run = stack.run_dir
    info = run.read_run()
    assert info["status"] == "failed"
    assert info["error"] == "RuntimeError: boom at step 12"
    epochs = strict_loads(run.metrics_json.read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1]
    terminal = [e for e in events_of(run) if e["type"].startswith("training_")]
    assert [(e["type"], e["error"]) for e in terminal] == [("training_failed", "RuntimeError: boom at step 12")]
    assert "Traceback" in run.training_log.read_text()


def test_keyboard_interrupt_marks_the_run_stopped(runs_root):
    stack = build_callbacks(local_config(runs_root, run_id="ctrlc"))
    with pytest.raises(SystemExit):  # Lightning exits after a graceful KeyboardInterrupt shutdown
        fit(stack, TinyRegressor(interrupt_at_step=10))
    run = stack.run_dir
    assert run.read_run()["status"] == "stopped"
    assert [e["type"] for e in events_of(run)][-1] == "training_stopped"


def test_stop_request_stops_within_a_tick(runs_root):
    from trackbridge.callbacks.record_writer import TICK_S

    stack = build_callbacks(local_config(runs_root, run_id="stopme"))
    run = stack.run_dir

    class RequestsStop(TinyRegressor):
        def training_step(self, batch, batch_idx):
            if self.global_step == 10:
                run.request_stop("test")  # as the web API would, from outside the loop
            return super().training_step(batch, batch_idx)

    batch_s = 0.02
    trainer = fit(stack, RequestsStop(sleep_s=batch_s), epochs=5)
    # the writer thread looks for the file every TICK_S; the training stops after the batch in progress
    assert 11 <= trainer.global_step <= 11 + TICK_S / batch_s + 2
    info = run.read_run()
    assert info["status"] == "stopped" and info["error"] is None
    types = [e["type"] for e in events_of(run)]
    assert types[-1] == "training_stopped" and "training_complete" not in types


def test_nan_and_inf_metrics_become_null_in_every_file(runs_root):
    stack = build_callbacks(local_config(runs_root, run_id="nan"))
    fit(stack, TinyRegressor(nan_metric=True), epochs=2)
    run = stack.run_dir
    for path in (run.run_json, run.metrics_json):
        strict_loads(path.read_text())
    for path in (run.events_jsonl, run.steps_jsonl):
        for line in path.read_text().splitlines():
            strict_loads(line)
    epochs = strict_loads(run.metrics_json.read_text())["epochs"]
    assert epochs[0]["val_nan"] is None and epochs[0]["val_inf"] is None


def test_build_callbacks_refuses_an_existing_run_id_and_writes_nothing(runs_root):
    first = build_callbacks(local_config(runs_root, run_id="taken"))
    first.session.flush()  # its first heartbeat is written: the folder is at rest
    before = sorted(p.name for p in runs_root.rglob("*"))
    with pytest.raises(RunExistsError, match="--resume"):
        build_callbacks(local_config(runs_root, run_id="taken"))
    assert sorted(p.name for p in runs_root.rglob("*")) == before


def test_seed_callbacks_work_on_their_own(tmp_path):
    """The seed's constructors: JSONMetricLogger(path), RunStatusUpdater(path), SSENotifier(queue)."""
    from trackbridge.callbacks.checkpoints import best_checkpoint

    events: queue.Queue = queue.Queue()
    run_json = tmp_path / "myrun" / "run.json"
    callbacks = [
        JSONMetricLogger(tmp_path / "myrun" / "metrics.json"),
        RunStatusUpdater(run_json),
        SSENotifier(events, run_id="myrun"),
        best_checkpoint(tmp_path / "myrun" / "checkpoints", "val_mae", "min"),
    ]
    fit(callbacks, epochs=2)
    info = json.loads(run_json.read_text())
    assert info["status"] == "completed" and info["monitor"] == "val_mae" and info["best_epoch"] in (1, 2)
    received = []
    while not events.empty():
        received.append(events.get_nowait())
    assert [e["id"] for e in received] == list(range(1, len(received) + 1))
    assert received[0]["type"] == "run_started" and received[-1]["type"] == "training_complete"
    assert [e["epoch"] for e in received if e["type"] == "epoch_end"] == [1, 2]


def test_resume_keeps_one_record_per_epoch(runs_root):
    stack = build_callbacks(local_config(runs_root, run_id="again"))
    fit(stack, epochs=2)
    resumed = build_callbacks(local_config(runs_root, run_id="again", resume=True))
    train, val = tiny_loaders()
    tiny_trainer(resumed, max_epochs=4).fit(TinyRegressor(), train, val, ckpt_path=resumed.run_dir.last_ckpt)
    run = resumed.run_dir
    assert [e["epoch"] for e in run.read_metrics()] == [1, 2, 3, 4]
    info = run.read_run()
    assert info["status"] == "completed" and info["epochs_done"] == 4 and "resumed_at" in info
    events = events_of(run)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [1, 2, 3, 4]
    steps = [json.loads(line)["step"] for line in run.steps_jsonl.read_text().splitlines()]
    assert steps == sorted(set(steps))
