"""The mirror's pure parts: URIs and UI links, record → points, params, batches, the cursor."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trackbridge import RunDirectory
from trackbridge.mirror import mapping
from trackbridge.mirror.cursor import Cursor, cursor_of
from trackbridge.mirror.mapping import Stream
from trackbridge.mirror.uri import (
    default_tracking_uri,
    embedded_root,
    mlflow_ui_url,
    resolve_tracking_uri,
)


def test_resolve_tracking_uri_prefers_config_then_env_then_embedded(tmp_path, monkeypatch):
    assert resolve_tracking_uri("http://team:5000", cwd=tmp_path) == "http://team:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, cwd=tmp_path) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = resolve_tracking_uri(None, cwd=tmp_path)
    assert uri == f"sqlite:///{tmp_path.absolute()}/mlruns/mlflow.db" == default_tracking_uri(tmp_path)
    assert embedded_root(uri) == tmp_path.absolute() / "mlruns"
    assert embedded_root("sqlite:////elsewhere/team.db") is None
    assert embedded_root("http://127.0.0.1:5000") is None


@pytest.mark.parametrize(
    ("tracking_uri", "env", "base"),
    [
        ("http://127.0.0.1:5051/", None, "http://127.0.0.1:5051"),
        ("https://mlflow.example.org", "http://ignored:1", "https://mlflow.example.org"),
        ("sqlite:////tmp/mlruns/mlflow.db", None, "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlruns/mlflow.db", "http://ui.local:8080/", "http://ui.local:8080"),
        ("postgresql://u@db/mlflow", "http://ui.local:8080", "http://ui.local:8080"),
    ],
)
def test_mlflow_ui_url_uses_the_server_or_the_configured_ui(tracking_uri, env, base, monkeypatch):
    if env:
        monkeypatch.setenv("TRACKBRIDGE_MLFLOW_UI_URL", env)
    else:
        monkeypatch.delenv("TRACKBRIDGE_MLFLOW_UI_URL", raising=False)
    assert mlflow_ui_url(tracking_uri, "3", "abc") == f"{base}/#/experiments/3/runs/abc"


def test_epoch_points_keep_step_epoch_and_record_time_and_skip_null():
    record = {"epoch": 2, "train_loss": 0.5, "val_nan": None, "lr": 0.001, "duration_s": 1.25,
              "time": "2026-11-29T17:46:05.123000Z"}
    points = mapping.epoch_points(record)
    assert {p.key for p in points} == {"epoch", "train_loss", "lr", "duration_s"}
    assert {p.step for p in points} == {2}
    assert {p.timestamp for p in points} == {1795974365123}
    assert dict((p.key, p.value) for p in points)["train_loss"] == 0.5


def test_step_points_use_the_global_step():
    line = {"step": 149, "time": "2026-11-29T17:46:05Z", "train_loss_step": 0.25, "other_step": None}
    assert mapping.step_points(line) == [mapping.Point("train_loss_step", 0.25, 1795974365000, 149)]


def test_metric_keys_are_made_acceptable_to_mlflow():
    assert mapping.clean_key("val/acc top-1") == "val/acc top-1"
    assert mapping.clean_key("loss[0]") == "loss_0_"
    assert len(mapping.clean_key("k" * 400)) == 250


def test_run_params_flatten_hyperparameters_then_config_and_truncate(caplog):
    run = {
        "config": {"task": "regression", "mode": "min", "hyperparameters": {"lr": 0.1, "opt": {"name": "adam"}}},
        "hyperparameters": {"lr": 0.1, "opt": {"name": "adam"}},
    }
    params = mapping.run_params(run, {"lr": 0.2, "hidden": 32, "note": "x" * 7000})
    assert params["lr"] == "0.1" and params["model.lr"] == "0.2"  # a clash keeps both, prefixed
    assert params["opt.name"] == "adam" and params["hidden"] == "32"
    assert params["task"] == "regression" and params["mode"] == "min"
    assert len(params["note"]) == 6000
    assert "truncated" in caplog.text


def test_run_tags_link_back_and_describe():
    run = {"run_id": "r1", "task": "classification", "monitor": "val_accuracy", "mode": "max", "host": "h"}
    tags = mapping.run_tags(run, "0.1.0")
    assert tags == {"trackbridge.run_id": "r1", "trackbridge.version": "0.1.0", "task": "classification",
                    "monitor": "val_accuracy", "mode": "max", "host": "h"}


@pytest.mark.parametrize(("status", "expected"), [("running", "RUNNING"), ("completed", "FINISHED"),
                                                  ("failed", "FAILED"), ("stopped", "KILLED")])
def test_mlflow_status_maps_the_lifecycle(status, expected):
    assert mapping.mlflow_status(status) == expected


def test_batches_respect_mlflow_request_limits():
    points = [mapping.Point("k", 1.0, 0, i) for i in range(2500)]
    sizes = [len(b) for b in mapping.batches(points)]
    assert sizes == [1000, 1000, 500]
    long_key = "x" * 250
    heavy = [mapping.Point(long_key, 1.0, 0, i) for i in range(5000)]
    for batch in mapping.batches(heavy):
        body = json.dumps({"metrics": [{"key": p.key, "value": p.value, "timestamp": 1795974365123,
                                        "step": p.step} for p in batch]})
        assert len(batch) <= 1000 and len(body) < 1_000_000
    params = {f"p{i}": "v" * 5000 for i in range(250)}
    for batch in mapping.param_batches(params):
        assert len(batch) <= 100 and sum(len(k) + len(v) for k, v in batch) < 1_000_000


def test_cursor_watermarks_only_move_forward(runs_root):
    run_dir = RunDirectory(runs_root, "c1")
    run_dir.create()
    cursor = Cursor(run_dir)
    assert cursor.read()["last_epoch_mirrored"] is None and cursor.read()["artifacts_pending"] == []
    cursor.advance({Stream.EPOCH: 3, Stream.STEP: 40})
    cursor.advance({Stream.EPOCH: 2, Stream.STEP: None})
    cursor.add_pending(["checkpoints/best.ckpt", "metrics.json"])
    cursor.add_pending(["checkpoints/best.ckpt"])
    cursor.remove_pending(["metrics.json"])
    stored = cursor_of(run_dir.read_run())
    assert (stored["last_epoch_mirrored"], stored["last_step_line_mirrored"]) == (3, 40)
    assert stored["artifacts_pending"] == ["checkpoints/best.ckpt"]


def test_importing_the_mirror_package_and_registry_does_not_import_mlflow():
    code = ("import sys, trackbridge.mirror, trackbridge.mirror.registry, trackbridge.mirror.cursor;"
            "print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
