"""The MLflow mirror against a real ``mlflow server``: histories, params, status, artifacts, resume, registry."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory, TrackingConfig, build_callbacks
from trackbridge.callbacks.mlflow_mirror import MLflowMirror

from conftest import run_cli
from mirror_helpers import artifact_paths, assert_history_equals_record, read_log
from tiny import TinyRegressor, tiny_loaders, tiny_trainer

pytestmark = pytest.mark.slow


class StopAtStep(pl.Callback):
    """Asks the run to stop, as the web API would, once training reaches ``step``."""

    def __init__(self, run_dir: RunDirectory, step: int) -> None:
        self.run_dir, self.step = run_dir, step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            self.run_dir.request_stop("test")


def uid(prefix: str) -> str:
    """A run id no other test on the shared server uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fit_tiny(runs_root, run_id, tracking_uri, *, module=None, epochs=3, resume=False, extra=(), **config):
    """Train TinyRegressor with the whole stack in this process; returns (stack, mirror, trainer)."""
    stack = build_callbacks(TrackingConfig(
        task="regression", runs_root=runs_root, run_id=run_id, tracking_uri=tracking_uri,
        resume=resume, early_stopping_patience=0, **config,
    ))
    mirror = next(cb for cb in stack.parts if isinstance(cb, MLflowMirror))
    train, val = tiny_loaders()
    trainer = tiny_trainer([*stack, *(cb(stack.run_dir) for cb in extra)], max_epochs=epochs)
    trainer.fit(module or TinyRegressor(), train, val, ckpt_path=stack.run_dir.last_ckpt if resume else None)
    return stack, mirror, trainer


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, mlflow_server):
    """A classification run (registered) and a regression run, trained by ``trackbridge train``."""
    cwd = tmp_path_factory.mktemp("mirror-cli")
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    model = f"digits-{uuid.uuid4().hex[:8]}"
    results = {
        "classification": run_cli("train", "--task", "classification", "--epochs", "3", "--run-id", "cls",
                                  "--runs-root", "runs", "--register-model", model, cwd=cwd, env=env),
        "regression": run_cli("train", "--task", "regression", "--epochs", "2", "--run-id", "reg",
                              "--runs-root", "runs", cwd=cwd, env=env),
    }
    for result in results.values():
        assert result.returncode == 0, result.stderr[-3000:]
    return {"cwd": cwd, "runs": cwd / "runs", "model": model, "results": results, "env": env}


@pytest.mark.parametrize(("task", "run_id", "epochs"), [("classification", "cls", 3), ("regression", "reg", 2)])
def test_mirror_run_equals_the_local_record(cli_runs, mlflow_server, task, run_id, epochs):
    run_dir = RunDirectory(cli_runs["runs"], run_id)
    run = run_dir.read_run()
    cursor = run["mlflow"]
    client = MlflowClient(mlflow_server.url)
    mlflow_run = client.get_run(cursor["run_id"])

    points = assert_history_equals_record(client, run_dir)
    assert points > 2 * epochs
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.info.run_name == run_id
    assert mlflow_run.data.tags["trackbridge.run_id"] == run_id
    assert {k: mlflow_run.data.tags[k] for k in ("task", "monitor", "mode")} == {
        "task": task, "monitor": run["monitor"], "mode": run["mode"]}
    params = mlflow_run.data.params
    assert params["task"] == task and params["max_epochs"] == str(epochs) and params["seed"] == "0"
    assert params["experiment"] == "trackbridge" and "lr" in params  # the model's own hyperparameters too
    assert {"metrics.json", "run.json", "logs/training.log", "checkpoints/best.ckpt",
            "checkpoints/last.ckpt"} <= artifact_paths(client, cursor["run_id"])
    # the cursor says everything arrived
    assert cursor["last_epoch_mirrored"] == epochs and cursor["artifacts_pending"] == []
    assert cursor["status_mirrored"] == "FINISHED" and cursor["outages"] == 0
    # the link in run.json and on the console opens the MLflow UI
    assert cursor["url"] == f"{mlflow_server.url}/#/experiments/{cursor['experiment_id']}/runs/{cursor['run_id']}"
    assert f"MLflow: {cursor['url']}" in cli_runs["results"][task].stdout
    with urllib.request.urlopen(cursor["url"], timeout=10) as response:
        assert response.status == 200
    assert "unreachable" not in read_log(run_dir)


def test_registry_round_trip_and_champion_only_moves_for_a_better_run(cli_runs, mlflow_server, monkeypatch):
    import mlflow.pytorch

    from trackbridge.reference.classification import DigitsClassifier

    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    model, runs, env = cli_runs["model"], cli_runs["runs"], cli_runs["env"]
    good = RunDirectory(runs, "cls")
    good_run = good.read_run()
    assert good_run["mlflow"]["registration_pending"] is None

    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.run_id == good_run["mlflow"]["run_id"]
    assert champion.tags["trackbridge.run_id"] == "cls" and champion.tags["mlflow_run_id"] == champion.run_id
    assert champion.tags["monitor"] == "val_accuracy" and int(champion.tags["best_epoch"]) == good_run["best_epoch"]
    assert float(champion.tags["score"]) == good_run["best_score"]
    assert "model/extra_files/best.ckpt" in artifact_paths(client, champion.run_id, "model")

    # A worse run (one epoch) registered from the command line: a new version, the champion stays.
    worse = run_cli("train", "--task", "classification", "--epochs", "1", "--run-id", "cls-worse",
                    "--runs-root", "runs", cwd=cli_runs["cwd"], env=env)
    assert worse.returncode == 0, worse.stderr[-3000:]
    worse_run = RunDirectory(runs, "cls-worse").read_run()
    assert worse_run["best_score"] < good_run["best_score"]
    registered = run_cli("register", "cls-worse", "--name", model, "--runs-root", "runs",
                         cwd=cli_runs["cwd"], env=env)
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert f"stays on version {champion.version}" in registered.stdout
    latest = client.get_model_version_by_alias(model, "latest")
    assert int(latest.version) == int(champion.version) + 1 and latest.run_id == worse_run["mlflow"]["run_id"]
    assert client.get_model_version_by_alias(model, "champion").version == champion.version

    # models:/NAME@champion loads the LightningModule with the best weights.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    loaded = mlflow.pytorch.load_model(f"models:/{model}@champion")
    assert isinstance(loaded, DigitsClassifier)
    reference = DigitsClassifier.load_from_checkpoint(good.best_ckpt, map_location="cpu").eval()
    batch = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(batch), reference(batch))
    assert isinstance(mlflow.pytorch.load_model(f"models:/{model}@latest"), DigitsClassifier)


def test_register_refuses_an_unfinished_run_with_exit_2(tmp_path, mlflow_server):
    RunDirectory(tmp_path / "runs", "half").create()
    result = run_cli("register", "half", "--name", "never", "--runs-root", "runs", cwd=tmp_path,
                     env={"MLFLOW_TRACKING_URI": mlflow_server.url})
    assert result.returncode == 2
    assert "only a completed run can be registered" in result.stderr


def test_failing_run_is_failed_and_stopped_run_is_killed_in_mlflow(runs_root, mlflow_server):
    client = MlflowClient(mlflow_server.url)
    fails, stops = uid("fails"), uid("stops")
    with pytest.raises(RuntimeError, match="boom"):
        fit_tiny(runs_root, fails, mlflow_server.url, module=TinyRegressor(fail_at_step=10))
    failed = RunDirectory(runs_root, fails).read_run()
    assert failed["status"] == "failed"
    failed_in_mlflow = client.get_run(failed["mlflow"]["run_id"])
    assert failed_in_mlflow.info.status == "FAILED"
    # the error travels too, so a stream served from MLflow alone can say why
    assert failed_in_mlflow.data.tags["trackbridge.error"] == failed["error"] == "RuntimeError: boom at step 10"
    assert "logs/training.log" in artifact_paths(client, failed["mlflow"]["run_id"])

    _, _, trainer = fit_tiny(runs_root, stops, mlflow_server.url, epochs=5,
                             extra=[lambda run_dir: StopAtStep(run_dir, 12)])
    stopped = RunDirectory(runs_root, stops).read_run()
    assert stopped["status"] == "stopped" and trainer.current_epoch < 5
    assert client.get_run(stopped["mlflow"]["run_id"]).info.status == "KILLED"
    assert_history_equals_record(client, RunDirectory(runs_root, stops))


def test_resume_continues_the_same_mlflow_run_without_duplicate_steps(runs_root, mlflow_server):
    """Steps are monotonic (DESIGN §6): the resumed run keeps the first attempt's steps past the checkpoint.

    This test used to expect steps.jsonl cut back to the checkpoint and the
    re-run steps skipped in MLflow; under the monotonic rule the record keeps
    its history and records only steps past the last one it holds, so MLflow
    and the record agree without MLflow ever holding a (key, step) twice.
    """
    client = MlflowClient(mlflow_server.url)
    again = uid("again")
    # The first attempt dies in epoch 3, after its step points of that epoch reached MLflow.
    with pytest.raises(RuntimeError):
        fit_tiny(runs_root, again, mlflow_server.url, module=TinyRegressor(fail_at_step=21), epochs=4)
    run_dir = RunDirectory(runs_root, again)
    first = run_dir.read_run()["mlflow"]
    # beyond last.ckpt (end of epoch 2, global step 16: steps 1, 3, ..., 15 are lines 0-7 of steps.jsonl)
    assert first["last_step_line_mirrored"] > 7
    first_steps = [json.loads(line) for line in run_dir.steps_jsonl.read_text().splitlines()]

    _, mirror, _ = fit_tiny(runs_root, again, mlflow_server.url, epochs=4, resume=True)
    second = run_dir.read_run()
    assert second["mlflow"]["run_id"] == first["run_id"] == mirror.mlflow_run_id
    assert [r["epoch"] for r in run_dir.read_metrics()] == [1, 2, 3, 4]
    steps = [json.loads(line) for line in run_dir.steps_jsonl.read_text().splitlines()]
    assert steps[: len(first_steps)] == first_steps  # history kept as it was
    assert [s["step"] for s in steps] == sorted({s["step"] for s in steps})  # each step once, in order
    assert mirror.worker.crashed is None and mirror.delivered is True
    assert_history_equals_record(client, run_dir)
    assert client.get_run(first["run_id"]).info.status == "FINISHED"
    assert len(client.search_runs([first["experiment_id"]], f"tags.`trackbridge.run_id` = '{again}'")) == 1


def test_embedded_default_creates_mlruns_sqlite(tmp_path):
    # conftest's autouse fixture has removed MLFLOW_TRACKING_URI from the environment
    result = run_cli("train", "--task", "regression", "--epochs", "1", "--run-id", "local", "--runs-root", "runs",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    db = tmp_path / "mlruns" / "mlflow.db"
    assert db.is_file()
    run_dir = RunDirectory(tmp_path / "runs", "local")
    cursor = run_dir.read_run()["mlflow"]
    assert cursor["tracking_uri"] == f"sqlite:///{db}"
    assert cursor["url"].startswith("http://127.0.0.1:5000/#/experiments/")
    client = MlflowClient(f"sqlite:///{db}")
    assert client.get_run(cursor["run_id"]).info.status == "FINISHED"
    assert_history_equals_record(client, run_dir)
    artifacts = artifact_paths(client, cursor["run_id"])
    assert "metrics.json" in artifacts
    assert (tmp_path / "mlruns" / "artifacts").is_dir()  # artifacts next to the database


def test_mirror_worker_uploads_only_the_newest_of_queued_changes(runs_root, mlflow_server, tmp_path):
    """Three best.ckpt changes queued while the worker is busy cost one upload, of the newest file."""
    from mlflow.artifacts import download_artifacts

    from trackbridge.mirror.worker import MirrorWorker
    from trackbridge.mirror.writer import RunWriter, spec_for

    run_dir = RunDirectory(runs_root, uid("latest"))
    run_dir.create({"task": "regression", "config": {"tracking_uri": mlflow_server.url}})
    worker = MirrorWorker(RunWriter(run_dir, spec_for(run_dir, extra_params={"p": "1"})))
    for version in (b"v1", b"v2", b"v3"):  # the worker has not looked yet: as if busy uploading
        run_dir.best_ckpt.write_bytes(version)
        worker.upload("checkpoints/best.ckpt")
    worker.start()
    worker.end_run("FINISHED", None, [], None, timeout=30)
    assert worker.close() is True
    assert worker.stats.uploads == 1
    local = download_artifacts(run_id=worker.mlflow_run_id, artifact_path="checkpoints/best.ckpt",
                               dst_path=str(tmp_path), tracking_uri=mlflow_server.url)
    assert open(local, "rb").read() == b"v3"
    assert run_dir.read_run()["mlflow"]["artifacts_pending"] == []
    assert not (run_dir.path / ".mlflow-upload").exists()
