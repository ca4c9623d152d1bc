"""``stack.logger`` as Lightning's logger, stages after fit, system and input-pipeline metrics, pickling.

Real Lightning trainings on the CPU against the session's real ``mlflow server``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO, wait_until
from tiny import TinyRegressor, tiny_loaders
from trackbridge import TrackingConfig, build_callbacks
from trackbridge.record.jsonio import read_jsonl


def strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def trainer_for(stack, epochs: int = 2, **kwargs) -> pl.Trainer:
    options = dict(enable_model_summary=False, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False)
    options.update(kwargs)
    return pl.Trainer(max_epochs=epochs, callbacks=stack, logger=stack.logger, **options)


class UserModule(TinyRegressor):
    """Existing Lightning code that talks to ``self.logger`` as Lightning's docs show."""

    def on_fit_start(self) -> None:
        self.logger.log_hyperparams({"foo": 1})
        self.logger.experiment.set_tag(self.logger.run_id, "k", "v")

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == 0:
            self.logger.log_metrics({"custom": 3.0}, step=5)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mae", (self(x) - y).abs().mean())


def test_logger_calls_of_user_code_land_in_the_record_and_in_mlflow(runs_root, mlflow_server):
    from lightning.pytorch.callbacks.progress.progress_bar import get_standard_metrics

    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, tracking_uri=mlflow_server.url,
                                           early_stopping_patience=0))
    train, val = tiny_loaders()
    trainer = trainer_for(stack)
    trainer.fit(UserModule(), train, val)
    assert stack.logger.version == stack.run_id
    # Lightning's progress bar shows the last 4 characters of a string version as v_num
    assert get_standard_metrics(trainer)["v_num"] == stack.run_id[-4:]
    run = stack.run_dir.read_run()
    assert run["logged_hyperparameters"]["foo"] == 1
    client = MlflowClient(mlflow_server.url)
    mlflow_run = client.get_run(run["mlflow"]["run_id"])
    assert stack.logger.run_id == mlflow_run.info.run_id
    assert mlflow_run.data.params["foo"] == "1"  # unprefixed, as Lightning's MLFlowLogger logs it
    assert mlflow_run.data.tags["k"] == "v"
    custom = [line for line in read_jsonl(stack.run_dir.steps_jsonl) if "custom" in line]
    assert [(line["step"], line["custom"]) for line in custom] == [(5, 3.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, "custom")] == [(5, 3.0)]


def test_fit_then_test_records_the_test_stage_in_the_same_run(runs_root, mlflow_server):
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, tracking_uri=mlflow_server.url,
                                           early_stopping_patience=0))
    train, val = tiny_loaders()
    module = UserModule()
    trainer = trainer_for(stack, epochs=3)
    trainer.fit(module, train, val)
    trainer.test(module, dataloaders=val)
    stages = strict_loads(stack.run_dir.metrics_json.read_text())["stages"]
    assert [(s["stage"], s["epoch"]) for s in stages] == [("test", 3)]
    test_mae = stages[0]["metrics"]["test_mae"]
    events = [strict_loads(line) for line in stack.run_dir.events_jsonl.read_text().splitlines()]
    stage_end = [e for e in events if e["type"] == "stage_end"]
    assert len(stage_end) == 1 and stage_end[0]["metrics"]["test_mae"] == test_mae
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    run = stack.run_dir.read_run()
    assert run["status"] == "completed"
    assert run["final_metrics"]["test"]["test_mae"] == test_mae and "val_mae" in run["final_metrics"]
    stack.close()  # the mirror worker is done with fit; the stage went through the record
    client = MlflowClient(mlflow_server.url)
    history = client.get_metric_history(run["mlflow"]["run_id"], "test_mae")
    assert [(m.step, m.value) for m in history] == [(3, pytest.approx(test_mae))]


class _SlowLoader(DataLoader):
    """A loader whose every batch takes 50 ms to come: a starved model."""

    def __iter__(self):
        for batch in super().__iter__():
            time.sleep(0.05)
            yield batch


def test_every_epoch_record_says_whether_the_loader_starved_the_model(runs_root):
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, mlflow=False,
                                           early_stopping_patience=0, system_metrics_interval_s=0))
    train, val = tiny_loaders()
    slow = _SlowLoader(train.dataset, batch_size=8)
    trainer_for(stack, epochs=2).fit(TinyRegressor(), slow, val)
    records = strict_loads(stack.run_dir.metrics_json.read_text())["epochs"]
    assert len(records) == 2
    for record in records:
        assert {"time/data_wait_s", "time/step_s", "throughput/samples_per_s"} <= set(record)
        assert record["time/data_wait_s"] >= 0.05 * 8  # 8 batches an epoch
        assert record["time/step_s"] < record["time/data_wait_s"]
        assert 0 < record["throughput/samples_per_s"] <= 64 / (0.05 * 8)
    assert not stack.run_dir.system_jsonl.exists()  # system_metrics_interval_s=0: no sampler


def test_system_metrics_are_sampled_with_mlflow_names(runs_root, mlflow_server):
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, tracking_uri=mlflow_server.url,
                                           early_stopping_patience=0, system_metrics_interval_s=1))
    train, val = tiny_loaders()
    trainer_for(stack, epochs=5).fit(TinyRegressor(sleep_s=0.13), train, val)  # about 5 s of training
    samples = list(read_jsonl(stack.run_dir.system_jsonl))
    assert len(samples) >= 3
    assert [s["step"] for s in samples] == list(range(len(samples)))
    for sample in samples:
        assert 0 <= sample["cpu_utilization_percentage"] <= 100 * os.cpu_count()
        assert sample["system_memory_usage_megabytes"] > 0 and sample["process_memory_rss_megabytes"] > 0
    events = [strict_loads(line) for line in stack.run_dir.events_jsonl.read_text().splitlines()]
    assert sum(e["type"] == "system" for e in events) == len(samples)
    stack.close()
    client = MlflowClient(mlflow_server.url)
    mlflow_run_id = stack.run_dir.read_run()["mlflow"]["run_id"]
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert len(client.get_metric_history(mlflow_run_id, name)) >= 3, name


def test_the_stack_and_its_logger_pickle_before_and_after_a_fit(runs_root):
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, mlflow=True,
                                           tracking_uri=f"sqlite:///{runs_root / 'mlflow.db'}"))
    for obj in [stack.logger, *stack]:
        pickle.loads(pickle.dumps(obj))
    train, val = tiny_loaders()
    trainer_for(stack, epochs=1).fit(TinyRegressor(), train, val)
    for obj in [stack.logger, *stack]:
        copy = pickle.loads(pickle.dumps(obj))
        assert type(copy) is type(obj)
    assert pickle.loads(pickle.dumps(stack.logger)).version == stack.run_id


DDP_SPAWN = """
import sys
sys.path.insert(0, {tests!r})
import lightning.pytorch as pl
from tiny import TinyRegressor, tiny_loaders
from trackbridge import TrackingConfig, build_callbacks

if __name__ == "__main__":
    stack = build_callbacks(TrackingConfig(task="regression", runs_root={runs!r}, run_id="spawned",
                                           tracking_uri={uri!r}, experiment="ddp-spawn", early_stopping_patience=0))
    train, val = tiny_loaders()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, callbacks=stack,
                         logger=stack.logger, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyRegressor(), train, val)
"""


def test_ddp_spawn_records_one_run_with_every_epoch_once(tmp_path, mlflow_server):
    runs = tmp_path / "runs"
    script = tmp_path / "spawn.py"
    script.write_text(DDP_SPAWN.format(tests=str(REPO / "tests"), runs=str(runs), uri=mlflow_server.url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKBRIDGE_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert [p.name for p in runs.iterdir()] == ["spawned"]
    run = json.loads((runs / "spawned" / "run.json").read_text())
    assert run["status"] == "completed"
    assert [r["epoch"] for r in json.loads((runs / "spawned" / "metrics.json").read_text())["epochs"]] == [1, 2]
    events = [json.loads(line) for line in (runs / "spawned" / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [1, 2]
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("ddp-spawn")
    mlflow_runs = client.search_runs([experiment.experiment_id])
    assert len(mlflow_runs) == 1
    assert [m.step for m in client.get_metric_history(mlflow_runs[0].info.run_id, "val_mae")] == [1, 2]
