"""`trackbridge train` and `trackbridge runs` as a user runs them: real processes, real training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import DESIGN_TASKS, run_cli



def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("task", DESIGN_TASKS)
def test_train_cli_records_every_task(task, tmp_path, mlflow_server):
    runs = tmp_path / "runs"
    result = run_cli("train", "--task", task, "--epochs", "3", "--run-id", f"t-{task}", "--runs-root", str(runs),
                     cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_server.url})
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = runs / f"t-{task}"
    assert f"t-{task}" in result.stdout and str(run_dir) in result.stdout
    monitor, mode = DESIGN_TASKS[task]
    info = strict_loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed"
    assert (info["monitor"], info["mode"]) == (monitor, mode)
    epochs = strict_loads((run_dir / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for record in epochs:
        for key in (monitor, "train_loss", "val_loss", "lr", "duration_s"):
            assert isinstance(record[key], float), (key, record)
    pick = max if mode == "max" else min
    best_score = pick(e[monitor] for e in epochs)
    assert isinstance(info["best_epoch"], int) and 1 <= info["best_epoch"] <= 3
    assert info["best_score"] == best_score == epochs[info["best_epoch"] - 1][monitor]
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(run_dir / "checkpoints" / name, weights_only=False)
        assert checkpoint["state_dict"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2
    assert (run_dir / "logs" / "training.log").read_text().strip()
    events = [strict_loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types.count("epoch_end") == 3 and types[-1] == "training_complete"


def test_train_cli_test_flag_evaluates_the_test_split_after_fit(tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", "--task", "regression", "--epochs", "1", "--run-id", "tested", "--runs-root",
                     str(runs), "--no-mlflow", "--test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.index("run tested completed") < out.index("test_mae") and "test_loss" in out
    assert strict_loads((runs / "tested" / "run.json").read_text())["status"] == "completed"


def test_train_cli_loads_reference_checkpoint_into_its_class(tmp_path):
    from trackbridge.reference import build_reference

    runs = tmp_path / "runs"
    result = run_cli("train", "--task", "regression", "--epochs", "2", "--run-id", "load",
                     "--runs-root", str(runs), "--no-mlflow", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    module, _ = build_reference("regression")
    loaded = type(module).load_from_checkpoint(runs / "load" / "checkpoints" / "best.ckpt")
    assert isinstance(loaded, type(module))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "detection"], "choose one of: classification, anomaly_detection"),
        (["--task", "regression", "--run-id", "../escape"], "invalid run id"),
        (["--task", "regression", "--run-id", "a b"], "invalid run id"),
        (["--task", "regression", "--patience", "-1"], "early_stopping_patience"),
        ([], "missing --task"),
    ],
)
def test_train_cli_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", *args, "--runs-root", str(runs), "--no-mlflow", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not runs.exists() or not any(runs.iterdir())
    assert not (tmp_path / "escape").exists()


def test_train_cli_existing_run_id_exits_2_and_leaves_it_alone(tmp_path):
    runs = tmp_path / "runs"
    (runs / "taken").mkdir(parents=True)
    (runs / "taken" / "run.json").write_text('{"run_id": "taken", "status": "completed"}')
    result = run_cli("train", "--task", "regression", "--run-id", "taken", "--runs-root", str(runs),
                     "--no-mlflow", cwd=tmp_path)
    assert result.returncode == 2
    assert "already exists" in result.stderr and "--resume" in result.stderr
    assert sorted(p.name for p in (runs / "taken").iterdir()) == ["run.json"]


SLOW_TRAINING = """
import sys
sys.path.insert(0, {tests!r})
from tiny import TinyRegressor, tiny_loaders, tiny_trainer
from trackbridge import TrackingConfig, build_callbacks
stack = build_callbacks(TrackingConfig(task="regression", runs_root={runs!r}, run_id="killed", mlflow=False,
                                       progress_interval_s=0.05))
train, val = tiny_loaders()
tiny_trainer(stack, max_epochs=100).fit(TinyRegressor(sleep_s=0.05), train, val)
"""


def test_sigkill_mid_epoch_leaves_parseable_files_and_runs_reports_failed(tmp_path):
    runs = tmp_path / "runs"
    script = SLOW_TRAINING.format(tests=str(Path(__file__).parent), runs=str(runs))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = runs / "killed" / "events.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait for a progress event inside epoch 2
            lines = events.read_text().splitlines() if events.exists() else []
            if any('"progress"' in line and '"epoch": 2' in line for line in lines):
                break
            time.sleep(0.05)
        else:
            pytest.fail("training never reached epoch 2")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = runs / "killed"
    assert strict_loads((run_dir / "run.json").read_text())["status"] == "running"
    assert [e["epoch"] for e in strict_loads((run_dir / "metrics.json").read_text())["epochs"]] == [1]
    result = run_cli("runs", "--runs-root", str(runs), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)
    assert listed["run_id"] == "killed" and listed["status"] == "failed"
    info = strict_loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "exited without reporting" in info["error"]
    last = strict_loads(events.read_text().splitlines()[-1])
    assert last["type"] == "training_failed" and "exited without reporting" in last["error"]
    table = run_cli("runs", "--runs-root", str(runs), cwd=tmp_path)
    assert "killed" in table.stdout and "failed" in table.stdout


def test_runs_cli_on_an_empty_root_says_how_to_start(tmp_path):
    result = run_cli("runs", "--runs-root", str(tmp_path / "none"), cwd=tmp_path)
    assert result.returncode == 0 and "trackbridge train" in result.stdout


def test_help_lists_commands_and_examples():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for flag in ("--task", "--epochs", "--run-id", "--runs-root", "--patience", "--resume"):
        assert flag in result.stdout


def test_import_trackbridge_does_not_import_mlflow_or_heavy_extras():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import trackbridge"],
                            capture_output=True, text=True, env={**os.environ})
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    for heavy in ("mlflow", "lightning", "torch", "flask"):
        assert heavy not in imported


def test_public_api_all_is_complete():
    """Every public class of the record, every callback, and every name trackbridge lists resolves."""
    import inspect

    import trackbridge
    import trackbridge.callbacks
    import trackbridge.record

    for name in trackbridge.__all__:
        assert getattr(trackbridge, name) is not None, name
    public = set(trackbridge.callbacks.__all__)
    public |= {n for n in trackbridge.record.__all__ if inspect.isclass(getattr(trackbridge.record, n))}
    public |= {"TrackingConfig", "TASKS", "TaskSpec", "UnknownTaskError", "get_task"}
    assert sorted(public - set(trackbridge.__all__)) == []
    assert dir(trackbridge) == trackbridge.__all__
