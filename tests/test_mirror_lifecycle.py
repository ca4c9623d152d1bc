"""The whole life of a run in MLflow (issue 13, mirror side), on a real server.

System samples under MLflow's ``system/`` names, a test stage after fit at
step = the last epoch, datasets as MLflow inputs, a LightningCLI
``config.yaml`` as artifact and params; and the registry's model version
with a signature, an input example, the test score and its requirements.
The training side of these (the system sampler, the stage recorder, the
config callback, the input example) is the stack's; here small stand-ins
write the same files and hand the same entries to the worker.
"""

from __future__ import annotations

import json
import shutil
import uuid

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory, TrackingConfig, build_callbacks
from trackbridge.callbacks.mlflow_mirror import MLflowMirror
from trackbridge.mirror.sync import register_run, sync_run
from trackbridge.record.clock import utc_now_iso
from trackbridge.record.jsonio import read_json, write_json_atomic

from mirror_helpers import artifact_paths
from tiny import TinyRegressor, tiny_loaders, tiny_trainer

pytestmark = pytest.mark.slow

CONFIG_YAML = """\
model:
  class_path: tiny.TinyRegressor
  init_args:
    lr: 0.05
data:
  batch_size: 8
trainer:
  max_epochs: 3
"""


class TinyWithTest(TinyRegressor):
    def test_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        self.log("test_loss", torch.nn.functional.mse_loss(pred, y))
        self.log("test_mae", (pred - y).abs().mean())


class SystemSampler(pl.Callback):
    """Stands in for the stack's sampler: one system.jsonl line per epoch, handed to the mirror."""

    def __init__(self, run_dir: RunDirectory, mirror: MLflowMirror) -> None:
        self.run_dir, self.mirror, self.lines = run_dir, mirror, []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        line = {"step": len(self.lines), "time": utc_now_iso(), "cpu_utilization_percentage": 10.0 + len(self.lines),
                "system_memory_usage_megabytes": 1000.0 + len(self.lines)}
        with open(self.run_dir.path / "system.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
        self.lines.append(line)
        self.mirror.worker.log_system(line)


class StageRecorder(pl.Callback):
    """Stands in for the stack's stage recording: the test stage into metrics.json when it ends."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir

    def on_test_end(self, trainer, pl_module) -> None:
        record = read_json(self.run_dir.metrics_json)
        last = max(r["epoch"] for r in record["epochs"])
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
        record["stages"] = [*record.get("stages", []),
                            {"stage": "test", "metrics": metrics, "time": utc_now_iso(), "epoch": last}]
        write_json_atomic(self.run_dir.metrics_json, record)


def test_system_metrics_test_stage_datasets_and_config_yaml_reach_mlflow(runs_root, mlflow_server):
    run_id = f"life-{uuid.uuid4().hex[:8]}"
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, run_id=run_id,
                                           tracking_uri=mlflow_server.url, early_stopping_patience=0))
    run_dir = stack.run_dir
    (run_dir.path / "config.yaml").write_text(CONFIG_YAML)  # as LightningCLI's SaveConfigCallback writes it
    mirror = next(cb for cb in stack.parts if isinstance(cb, MLflowMirror))
    sampler = SystemSampler(run_dir, mirror)
    train, val = tiny_loaders()
    trainer = tiny_trainer([*stack, sampler, StageRecorder(run_dir)], max_epochs=3)
    model = TinyWithTest()
    trainer.fit(model, train, val)
    assert mirror.delivered is True
    trainer.test(model, dataloaders=val)

    client = MlflowClient(mlflow_server.url)
    cursor = run_dir.read_run()["mlflow"]
    run = client.get_run(cursor["run_id"])
    assert run.info.status == "FINISHED"  # the stage after fit leaves fit's status
    for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes"):
        history = client.get_metric_history(run.info.run_id, f"system/{name}")
        assert [(m.step, m.value) for m in history] == [(line["step"], line[name]) for line in sampler.lines]
    stage = read_json(run_dir.metrics_json)["stages"][0]
    for key in ("test_loss", "test_mae"):
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] == [
            (3, pytest.approx(stage["metrics"][key]))]
    inputs = {(d.dataset.name, t.value) for d in run.inputs.dataset_inputs for t in d.tags
              if t.key == "mlflow.data.context"}
    assert {context for _, context in inputs} == {"training", "validation", "test"}
    assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
    assert "config.yaml" in artifact_paths(client, run.info.run_id)
    params = run.data.params
    assert params["model.init_args.lr"] == "0.05" and params["trainer.max_epochs"] == "3"
    assert (cursor["last_system_mirrored"], cursor["last_stage_mirrored"]) == (2, 0)
    assert not sync_run(run_dir).changed  # the cursor knows the system samples and the stage arrived


def test_registered_model_has_signature_example_test_score_and_requirements(
        runs_root, mlflow_server, monkeypatch, tmp_path):
    import mlflow.models
    import mlflow.pyfunc

    from trackbridge.reference import build_reference

    # a finished classification run, trained here, with the files the training side leaves
    run_id = f"reg-{uuid.uuid4().hex[:8]}"
    stack = build_callbacks(TrackingConfig(task="classification", runs_root=runs_root, run_id=run_id,
                                           tracking_uri=mlflow_server.url, early_stopping_patience=0))
    module, data = build_reference("classification", seed=0, steps_per_epoch=5)
    pl.Trainer(max_epochs=2, callbacks=stack, logger=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(module, datamodule=data)
    run_dir = stack.run_dir
    example = np.asarray(next(iter(data.val_dataloader()))[0][:4], dtype=np.float32)
    np.save(run_dir.path / "input_example.npy", example)
    record = read_json(run_dir.metrics_json)
    record["stages"] = [{"stage": "test", "metrics": {"test_accuracy": 0.75, "test_loss": 0.5},
                         "time": utc_now_iso(), "epoch": 2}]
    write_json_atomic(run_dir.metrics_json, record)
    inputs = client_inputs(mlflow_server.url, run_dir)
    assert {"training", "validation"} <= inputs  # the data module's splits, by MLflow context

    name = f"digits-sig-{uuid.uuid4().hex[:6]}"
    result = register_run(run_dir, name, "champion")
    assert result["alias_moved"] and result["signature"]
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    version = client.get_model_version(name, str(result["version"]))
    assert version.tags["test_metric"] == "test_accuracy" and float(version.tags["test_score"]) == 0.75
    assert version.tags["task"] == "classification" and version.tags["monitor"] == "val_accuracy"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    info = mlflow.models.get_model_info(f"models:/{name}@champion")
    assert info.signature is not None and tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 64)
    assert info.metadata["task"] == "classification"
    predicted = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(example)
    expected = type(module).load_from_checkpoint(run_dir.best_ckpt, map_location="cpu").eval()(
        torch.from_numpy(example)).detach().numpy()
    assert np.allclose(predicted, expected, atol=1e-6)
    files = artifact_paths(client, result["mlflow_run_id"], "model")
    assert {"model/input_example.json", "model/requirements.txt", "model/extra_files/best.ckpt"} <= files
    requirements = client.download_artifacts(result["mlflow_run_id"], "model/requirements.txt", str(tmp_path))
    assert f"torch=={torch.__version__}" in open(requirements).read()
    # the stage's metrics went along with the sync before the registration, at step = the last epoch
    assert [m.step for m in client.get_metric_history(result["mlflow_run_id"], "test_accuracy")] == [2]
    shutil.rmtree(run_dir.path / ".mlflow-upload", ignore_errors=True)


def client_inputs(url: str, run_dir: RunDirectory) -> set[str]:
    run = MlflowClient(url).get_run(run_dir.read_run()["mlflow"]["run_id"])
    return {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
