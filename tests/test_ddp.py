"""DDP on the CPU: 2 processes (gloo), one run directory, one MLflow run, every epoch once.

Lightning's DDP launcher re-executes its script for the other rank, so the
training runs as a real subprocess (tests/ddp_train.py) against the session's
real MLflow server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import REPO, MlflowServer

pytestmark = pytest.mark.slow

SCRIPT = REPO / "tests" / "ddp_train.py"
EPOCHS = 2  # ddp_train.EPOCHS


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    runs_root, reports = root / "runs", root / "reports"
    runs_root.mkdir()
    reports.mkdir()
    experiment = f"ddp-{root.name}"
    # Module-scoped, so built before the autouse env isolation: filter here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKBRIDGE_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(runs_root), mlflow_server.url, experiment, str(reports)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"DDP training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return {
        "runs_root": runs_root,
        "reports": {int(p.stem[4:]): json.loads(p.read_text()) for p in reports.glob("rank*.json")},
        "experiment": experiment,
        "server": mlflow_server,
        "output": result.stdout + result.stderr,
    }


def test_ddp_runs_two_gloo_processes(ddp_run: dict) -> None:
    reports = ddp_run["reports"]
    assert sorted(reports) == [0, 1]
    for report in reports.values():
        assert report["world_size"] == 2
        assert report["strategy"] == "DDPStrategy"
        assert report["backend"] == "gloo"
        assert report["epochs"] == list(range(1, EPOCHS + 1))


def test_ddp_writes_one_run_directory(ddp_run: dict) -> None:
    runs = [p for p in ddp_run["runs_root"].iterdir()]
    assert len(runs) == 1, f"more than one run directory: {[p.name for p in runs]}"
    run = json.loads((runs[0] / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["epochs_done"] == EPOCHS
    # every rank's stack names the one run (rank zero's id, broadcast in setup)
    assert {report["run_id"] for report in ddp_run["reports"].values()} == {runs[0].name}


def test_ddp_records_every_epoch_once(ddp_run: dict) -> None:
    (run_dir,) = ddp_run["runs_root"].iterdir()
    epochs = [record["epoch"] for record in json.loads((run_dir / "metrics.json").read_text())["epochs"]]
    assert epochs == list(range(1, EPOCHS + 1))

    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    ids = [event["id"] for event in events]
    assert ids == list(range(1, len(events) + 1)), "event ids must be 1..n, no duplicates from a second writer"
    types = Counter(event["type"] for event in events)
    assert types["run_started"] == 1
    assert types["training_complete"] == 1
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == list(range(1, EPOCHS + 1))

    steps_file = run_dir / "steps.jsonl"
    if steps_file.exists():
        points = Counter(
            (line["step"], key) for line in map(json.loads, steps_file.read_text().splitlines())
            for key in line if key not in ("step", "time")
        )
        assert points and max(points.values()) == 1, "a (step, metric) point logged twice"


def test_ddp_mirrors_one_mlflow_run_with_every_epoch_once(ddp_run: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(ddp_run["server"].url)
    experiment = client.get_experiment_by_name(ddp_run["experiment"])
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, f"{len(runs)} MLflow runs for one DDP training"
    (run_dir,) = ddp_run["runs_root"].iterdir()
    records = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        history = client.get_metric_history(runs[0].info.run_id, key)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), key
        assert [m.value for m in history] == pytest.approx([r[key] for r in records]), key


def test_ddp_mlflow_run_id_is_known_on_every_rank(ddp_run: dict) -> None:
    (run_dir,) = ddp_run["runs_root"].iterdir()
    mlflow_run_id = json.loads((run_dir / "run.json").read_text())["mlflow"]["run_id"]
    assert mlflow_run_id
    assert {rank: r["mlflow_run_id"] for rank, r in ddp_run["reports"].items()} == {0: mlflow_run_id, 1: mlflow_run_id}

    # ... so rank 1 could attach an artifact to the one run.
    from mlflow import MlflowClient

    attached = ddp_run["reports"][1]["attached"]
    listed = [f.path for f in MlflowClient(ddp_run["server"].url).list_artifacts(mlflow_run_id, "ranks")]
    assert attached in listed


STOP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import lightning.pytorch as pl
from tiny import TinyRegressor, tiny_loaders
from trackbridge import RunDirectory, TrackingConfig, build_callbacks


class RequestsStop(TinyRegressor):
    def training_step(self, batch, batch_idx):
        if self.global_step == 6 and self.global_rank == 0:  # only rank zero sees the request appear
            RunDirectory({runs!r}, "ddp-stop").request_stop("test")
        return super().training_step(batch, batch_idx)


stack = build_callbacks(TrackingConfig(task="regression", runs_root={runs!r}, run_id="ddp-stop", mlflow=False))
train, val = tiny_loaders()
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=20, callbacks=stack, logger=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(RequestsStop(), train, val)
print("rank", trainer.global_rank, "stopped at step", trainer.global_step)
"""


def test_ddp_stop_request_stops_every_rank_at_the_same_batch(tmp_path: "os.PathLike[str]") -> None:
    runs = tmp_path / "runs"
    script = tmp_path / "ddp_stop.py"
    script.write_text(STOP_SCRIPT.format(tests=str(REPO / "tests"), runs=str(runs)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKBRIDGE_"))}
    # a rank that stopped one batch later than the other would hang in the gradient all-reduce
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    stopped = sorted(line for line in result.stdout.splitlines() if line.startswith("rank"))
    steps = {int(line.rsplit(" ", 1)[1]) for line in stopped}
    # the request is seen within a writer tick (0.1 s); both ranks stop after the same batch
    assert len(stopped) == 2 and len(steps) == 1 and min(steps) >= 7, stopped
    info = json.loads((runs / "ddp-stop" / "run.json").read_text())
    assert info["status"] == "stopped"
    assert [p.name for p in runs.iterdir()] == ["ddp-stop"]
