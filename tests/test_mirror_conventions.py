"""MLflow's conventions, on a real server: experiment from the environment, its kind, adopted runs, standard tags.

The training runs as a user's script would: its own process, in a git work
tree, with MLflow's environment variables set the way AzureML, ``mlflow
run`` or a scheduler set them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory
from trackbridge.mirror.conventions import ExperimentRef, resolve_experiment

from mirror_helpers import timed_fit

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent

USER_SCRIPT = '''
import sys
sys.path.insert(0, {tests!r})
import mlflow
from mlflow.tracking import MlflowClient
from tiny import TinyRegressor, tiny_loaders, tiny_trainer
from trackbridge import TrackingConfig, build_callbacks

mode, run_id = sys.argv[1], sys.argv[2]
config = TrackingConfig(task="regression", runs_root="runs", run_id=run_id, early_stopping_patience=0,
                        run_name="nice-name", tags={{"team": "vision", "dataset": "tiny"}},
                        description="Tiny regressor, **two** epochs.")


def train():
    stack = build_callbacks(config)
    train, val = tiny_loaders()
    tiny_trainer(stack, max_epochs=2).fit(TinyRegressor(), train, val)
    return stack


if mode == "active":
    with mlflow.start_run() as active:
        stack = train()
        status = MlflowClient().get_run(active.info.run_id).info.status
        print("ACTIVE", active.info.run_id, status)
else:
    train()
    print("SQLALCHEMY", "sqlalchemy" in sys.modules)  # mirroring to a server needs no SQL store in-process
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    """A git work tree holding the user's training script, committed."""
    root = tmp_path_factory.mktemp("user-repo")
    (root / "train_user.py").write_text(USER_SCRIPT.format(tests=str(TESTS)))
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "train_user.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "train"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return {"root": root, "commit": commit}


def run_script(repo: dict, mode: str, run_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    result = subprocess.run([sys.executable, "train_user.py", mode, run_id], cwd=repo["root"],
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_experiment_from_the_environment_kind_tag_and_standard_run_tags(repo, mlflow_server):
    experiment = f"teamexp-{uuid.uuid4().hex[:6]}"
    result = run_script(repo, "plain", "plain-1", {"MLFLOW_TRACKING_URI": mlflow_server.url,
                                                   "MLFLOW_EXPERIMENT_NAME": experiment})
    assert "SQLALCHEMY False" in result.stdout
    client = MlflowClient(mlflow_server.url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None and found.tags["mlflow.experimentKind"] == "custom_model_development"
    cursor = RunDirectory(repo["root"] / "runs", "plain-1").read_run()["mlflow"]
    assert cursor["experiment_id"] == found.experiment_id and cursor["experiment"] == experiment
    run = client.get_run(cursor["run_id"])
    tags = run.data.tags
    assert run.info.run_name == "nice-name" and run.info.status == "FINISHED"
    assert tags["team"] == "vision" and tags["dataset"] == "tiny"
    assert tags["mlflow.note.content"] == "Tiny regressor, **two** epochs."
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"].endswith("train_user.py")
    assert tags["mlflow.source.git.commit"] == repo["commit"]
    assert tags["trackbridge.run_id"] == "plain-1"


def test_a_script_that_started_an_mlflow_run_gets_no_second_run(repo, mlflow_server):
    experiment = f"adopt-{uuid.uuid4().hex[:6]}"
    result = run_script(repo, "active", "adopt-1", {"MLFLOW_TRACKING_URI": mlflow_server.url,
                                                    "MLFLOW_EXPERIMENT_NAME": experiment})
    _, active_id, status_after_fit = next(line for line in result.stdout.splitlines()
                                          if line.startswith("ACTIVE")).split()
    client = MlflowClient(mlflow_server.url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert [r.info.run_id for r in runs] == [active_id]  # one run: the user's
    assert status_after_fit == "RUNNING"  # its lifecycle is its owner's: the mirror did not end it
    run = client.get_run(active_id)
    assert run.info.status == "FINISHED"  # ended by the user's `with mlflow.start_run()`
    assert run.data.tags["trackbridge.run_id"] == "adopt-1" and "val_mae" in run.data.metrics
    cursor = RunDirectory(repo["root"] / "runs", "adopt-1").read_run()["mlflow"]
    assert cursor["run_id"] == active_id and cursor["adopted"] is True and cursor["status_mirrored"] is None


def test_mlflow_run_id_from_a_launcher_is_adopted_and_left_running(runs_root, mlflow_server, monkeypatch):
    client = MlflowClient(mlflow_server.url)
    experiment_id = client.create_experiment(f"launcher-{uuid.uuid4().hex[:6]}")
    launched = client.create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)  # as `mlflow run` or a scheduler sets them
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    run_dir, mirror, _ = timed_fit(runs_root, mlflow_server.url, epochs=2, sleep_s=0.0)
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [launched]
    run = client.get_run(launched)
    assert run.info.status == "RUNNING" and "val_mae" in run.data.metrics  # the launcher ends it
    assert run.data.tags["trackbridge.run_id"] == run_dir.run_id and mirror.delivered is True
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_experiment_resolution_order(monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    assert resolve_experiment(None) == ExperimentRef("trackbridge", None)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "17")
    assert resolve_experiment(None) == ExperimentRef(None, "17")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "teamexp")
    assert resolve_experiment(None) == ExperimentRef("teamexp", None)
    assert resolve_experiment("mine") == ExperimentRef("mine", None)


def test_train_cli_run_name_tags_and_description_reach_the_config(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from trackbridge.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [
        "train", "--task", "regression", "--epochs", "1", "--run-id", "named", "--runs-root", "runs",
        "--no-mlflow", "--run-name", "first try", "--tag", "team=vision", "--tag", "note=a=b",
        "--description", "hello"])
    assert result.exit_code == 0, result.output[-3000:]
    config = json.loads((tmp_path / "runs" / "named" / "run.json").read_text())["config"]
    assert (config["run_name"], config["tags"], config["description"]) == (
        "first try", {"team": "vision", "note": "a=b"}, "hello")
    bad = CliRunner().invoke(main, ["train", "--task", "regression", "--tag", "novalue", "--no-mlflow"])
    assert bad.exit_code == 2 and "--tag wants KEY=VALUE" in bad.stderr
