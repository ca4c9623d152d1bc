"""A LightningCLI run with a config file (the README's example script, run for real)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO


def test_lightning_cli_config_lands_in_the_run_and_in_mlflow(tmp_path, mlflow_server):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_cli.py"), "fit", "--config", str(REPO / "examples" / "cli_config.yaml"),
         "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env={**__import__("os").environ, "MLFLOW_TRACKING_URI": mlflow_server.url},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["hidden"] == 48 and config["data"]["batch_size"] == 32 and config["trainer"]["max_epochs"] == 2
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["epochs_done"] == 2
    assert run["logged_hyperparameters"]["model.hidden"] == 48
    client = MlflowClient(mlflow_server.url)
    mlflow_run = client.get_run(run["mlflow"]["run_id"])
    params = mlflow_run.data.params
    assert params["model.hidden"] == "48" and params["trainer.max_epochs"] == "2" and params["data.batch_size"] == "32"
    assert "config.yaml" in [f.path for f in client.list_artifacts(mlflow_run.info.run_id)]
