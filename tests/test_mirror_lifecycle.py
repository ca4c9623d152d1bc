"""The whole life of a run in MLflow (issue 13, mirror side), on a real server.

System samples under MLflow's ``system/`` names, a test stage after fit at
step = the last epoch, datasets as MLflow inputs, a LightningCLI
``config.yaml`` as artifact and params; and the registry's model version
with a signature, an input example, the test score and its requirements.
The training side of these is the stack's own (its system sampler, its stage
record); the LightningCLI config and the input example are written here as
their callbacks leave them.
"""

from __future__ import annotations

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
from trackbridge.record.jsonio import read_json, read_jsonl, write_json_atomic

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


def test_system_metrics_test_stage_datasets_and_config_yaml_reach_mlflow(runs_root, mlflow_server):
    run_id = f"life-{uuid.uuid4().hex[:8]}"
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, run_id=run_id,
                                           tracking_uri=mlflow_server.url, early_stopping_patience=0,
                                           system_metrics_interval_s=0.5))
    run_dir = stack.run_dir
    # what LightningCLIConfig leaves when it saves the config before the mirror is set up
    (run_dir.path / "config.yaml").write_text(CONFIG_YAML)
    stack.session.update_run(lambda run: run.update(
        logged_hyperparameters={"model.init_args.lr": 0.05, "trainer.max_epochs": 3}, config_file="config.yaml"))
    mirror = next(cb for cb in stack.parts if isinstance(cb, MLflowMirror))
    train, val = tiny_loaders()
    trainer = tiny_trainer(stack, max_epochs=3)
    model = TinyWithTest(sleep_s=0.05)
    trainer.fit(model, train, val)
    assert mirror.delivered is True
    trainer.test(model, dataloaders=val)
    stack.close()

    client = MlflowClient(mlflow_server.url)
    cursor = run_dir.read_run()["mlflow"]
    run = client.get_run(cursor["run_id"])
    assert run.info.status == "FINISHED"  # the stage after fit leaves fit's status
    samples = list(read_jsonl(run_dir.system_jsonl))
    assert len(samples) >= 2
    for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes"):
        history = client.get_metric_history(run.info.run_id, f"system/{name}")
        assert sorted((m.step, m.value) for m in history) == [(line["step"], line[name]) for line in samples]
    stage = read_json(run_dir.metrics_json)["stages"][0]
    assert stage["stage"] == "test" and stage["epoch"] == 3
    for key in ("test_loss", "test_mae"):
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] == [
            (3, pytest.approx(stage["metrics"][key]))]
    inputs = {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
    assert inputs == {"training", "validation", "test"}
    assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
    assert "config.yaml" in artifact_paths(client, run.info.run_id)
    params = run.data.params
    assert params["model.init_args.lr"] == "0.05" and params["trainer.max_epochs"] == "3"
    assert cursor["last_system_line_mirrored"] == len(samples) - 1 and cursor["last_stage_mirrored"] == 0
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
    stack.close()  # the record is complete: nothing rewrites metrics.json behind this test
    run_dir = stack.run_dir
    example_path = run_dir.path / "input_example.npy"  # the stack's InputExampleRecorder writes it
    if not example_path.is_file():
        np.save(example_path, np.asarray(next(iter(data.val_dataloader()))[0][:4], dtype=np.float32))
    example = np.load(example_path)
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
