"""The live API and MLflow: streams derived from an MLflow run, registering over HTTP, the server plugin."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import httpx
import pytest

from conftest import MlflowServer, run_cli
from web_clients import (
    EVIL, ServeProcess, assert_rebinding_refused, epoch_metrics, file_events, get_raw, live_run, read_sse, read_ws,
)

pytestmark = pytest.mark.slow

RUN_ID = "mirrored-1"
LIFECYCLE = ("run_started", "epoch_end", "training_complete", "training_failed", "training_stopped")


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Path:
    """A finished regression run, mirrored into the session's MLflow server; returns its runs root."""
    root = tmp_path_factory.mktemp("web-mlflow") / "runs"
    result = run_cli(
        "train", "--task", "regression", "--epochs", "2", "--run-id", RUN_ID, "--runs-root", str(root),
        "--tracking-uri", mlflow_server.url, "--experiment", "web-tests", cwd=root.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_mlflow_source_derives_the_events_of_a_run_as_it_is_logged(mlflow_server: MlflowServer) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from trackbridge.events import MlflowEventSource, find_mlflow_run

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("web-source") or client.get_experiment(client.create_experiment("web-source"))
    mlflow_run = client.create_run(experiment.experiment_id, run_name="src-1", tags={"trackbridge.run_id": "src-1"})
    run_id = mlflow_run.info.run_id
    client.log_param(run_id, "max_epochs", "3")
    now = int(time.time() * 1000)

    def log_epoch(epoch: int, **metrics: float) -> None:
        points = [Metric(k, v, now + epoch, epoch) for k, v in metrics.items()]
        points.append(Metric("epoch", epoch, now + epoch, epoch))
        points.append(Metric("train_loss_step", 9.0, now + epoch, epoch * 10))  # a step curve, not an epoch metric
        client.log_batch(run_id, metrics=points)

    assert find_mlflow_run(client, "src-1").info.run_id == run_id
    assert find_mlflow_run(client, "no-such-run") is None
    source = MlflowEventSource(client, run_id, "src-1", min_refresh_s=0)
    log_epoch(1, val_loss=1.5, lr=0.01)
    events = source.read()
    assert [e["type"] for e in events] == ["run_started", "epoch_end"]
    assert events[0]["max_epochs"] == 3
    assert events[1]["epoch"] == 1 and events[1]["metrics"] == {"val_loss": 1.5, "lr": 0.01}
    log_epoch(2, val_loss=1.25, lr=float("nan"))
    new = source.read(2)
    assert [(e["id"], e["epoch"], e["metrics"]) for e in new] == [(3, 2, {"val_loss": 1.25, "lr": None})]
    client.set_terminated(run_id, "KILLED")
    assert [(e["id"], e["type"], e["status"]) for e in source.read(3)] == [(4, "training_stopped", "stopped")]
    assert all(not math.isnan(v) for e in source.read() if e["type"] == "epoch_end" for v in e["metrics"].values() if v is not None)


def test_mlflow_served_stream_matches_the_file_served_one(mirrored: Path, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """A server that cannot read the run directory serves the same run from MLflow alone."""
    elsewhere = tmp_path / "empty-runs"  # another host: no shared disk
    elsewhere.mkdir()
    from_file = ServeProcess(mirrored, log=tmp_path / "file.log")
    from_mlflow = ServeProcess(elsewhere, "--tracking-uri", mlflow_server.url, log=tmp_path / "mlflow.log")
    try:
        with httpx.Client() as client:
            by_file = read_sse(client, f"{from_file.url}/api/training/{RUN_ID}/stream", timeout=60)
            by_mlflow = read_sse(client, f"{from_mlflow.url}/api/training/{RUN_ID}/stream", timeout=60)
            assert by_file.error is None and by_mlflow.error is None, (by_file.error, by_mlflow.error)
            assert by_mlflow.closed_by_server
            run = client.get(f"{from_mlflow.url}/api/runs/{RUN_ID}").json()
            metrics = client.get(f"{from_mlflow.url}/api/runs/{RUN_ID}/metrics").json()
            assert client.get(f"{from_mlflow.url}/api/runs/not-anywhere").status_code == 404
    finally:
        from_file.stop()
        from_mlflow.stop()

    def lifecycle(events: list[dict]) -> list[tuple]:
        return [
            (e["type"], e.get("epoch"), e.get("max_epochs"), e.get("metrics"), e.get("status"))
            for e in events if e["type"] in LIFECYCLE
        ]

    assert by_file.events == file_events(mirrored, RUN_ID)
    assert lifecycle(by_mlflow.events) == lifecycle(by_file.events)
    assert [e["metrics"] for e in by_mlflow.events if e["type"] == "epoch_end"] == epoch_metrics(mirrored, RUN_ID)
    assert by_mlflow.ids == list(range(1, len(by_mlflow.ids) + 1))
    local = json.loads((mirrored / RUN_ID / "run.json").read_text())
    assert run["status"] == "completed" and run["mlflow_url"] == local["mlflow"]["url"]
    assert [{k: v for k, v in r.items() if k != "time"} for r in metrics["epochs"]] == [
        {k: v for k, v in r.items() if k != "time"} for r in json.loads((mirrored / RUN_ID / "metrics.json").read_text())["epochs"]
    ]


def test_mlflow_register_over_http_makes_a_model_version(mirrored: Path, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    server = ServeProcess(mirrored, log=tmp_path / "serve.log")
    try:
        response = httpx.post(
            f"{server.url}/api/runs/{RUN_ID}/register", json={"name": "web-registered", "alias": "champion"}, timeout=180
        )
        assert response.status_code == 201, response.text
        again = httpx.post(f"{server.url}/api/runs/{RUN_ID}/register", json={}, timeout=30)
        assert again.status_code == 400
    finally:
        server.stop()
    version = MlflowClient(mlflow_server.url).get_model_version_by_alias("web-registered", "champion")
    assert version.version == str(response.json()["version"])
    assert version.tags.get("trackbridge.run_id") == RUN_ID


@pytest.mark.parametrize("mode", ["uvicorn", "gunicorn-gthread"])
def test_mlflow_server_plugin_serves_health_rest_and_the_stream_on_one_port(
    mirrored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """`mlflow server --app-name trackbridge` in its default mode (uvicorn) and with gunicorn gthread.

    Under uvicorn a training runs while SSE and WebSocket clients watch it (the
    native ASGI routes); both modes replay a finished run.
    """
    monkeypatch.setenv("TRACKBRIDGE_RUNS_ROOT", str(mirrored))
    extra = ("--app-name", "trackbridge")
    if mode == "gunicorn-gthread":
        extra += ("--gunicorn-opts", "--worker-class gthread --threads 32")
    server = MlflowServer(tmp_path / "mlflow", extra_args=extra).start()
    ws_base = server.url.replace("http", "ws")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/health").status_code == 200
            search = client.post("/api/2.0/mlflow/experiments/search", json={"max_results": 10})
            assert search.status_code == 200 and "experiments" in search.json()
            runs = client.get("/api/runs").json()["runs"]
            assert RUN_ID in [r["run_id"] for r in runs] and all(r["mlflow_url"] for r in runs if r["run_id"] == RUN_ID)
            stream = read_sse(client, f"{server.url}/api/training/{RUN_ID}/stream", timeout=60)
            assert stream.error is None and stream.events == file_events(mirrored, RUN_ID)
            resumed = read_sse(client, f"{server.url}/api/training/{RUN_ID}/stream", headers={"Last-Event-ID": "2"})
            assert resumed.ids == [e["id"] for e in file_events(mirrored, RUN_ID)][2:]
            bad = client.get("/api/training/%2e%2e/stream")
            assert bad.status_code == 400 and bad.json()["error"]
            assert client.get("/api/training/x/stream", headers={"Last-Event-ID": "no"}).status_code == 400
            assert client.get("/api/runs/nope/metrics").status_code == 404
            assert client.get("/api/training/nope/stream").json()["status"] == 404
        events, others = read_ws(f"{ws_base}/api/training/{RUN_ID}/ws", timeout=60)
        assert events == file_events(mirrored, RUN_ID), others
        # DNS rebinding (no token set): the live API refuses a foreign Host; so does MLflow, by its own rule
        if not (mirrored / f"live-{mode}").exists():
            live_run(mirrored, f"live-{mode}")
        assert_rebinding_refused(
            server.port, mirrored, "/trackbridge/", done=RUN_ID, live=f"live-{mode}", ours=mode == "uvicorn"
        )
        assert get_raw(server.port, "/api/2.0/mlflow/experiments/search?max_results=1", f"{EVIL}:{server.port}")[0] == 403
        if mode == "uvicorn":
            _watch_a_live_training(mirrored, server.url, tmp_path)
            _stop_with_a_stream_open(mirrored, server)
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "mlflow" / "server.log").read_text()


def _watch_a_live_training(root: Path, url: str, tmp_path: Path) -> None:
    import threading

    from conftest import wait_until
    from web_clients import start_training

    run_id = "plugin-live"
    training = start_training(root, run_id, epochs=3, batches=4, sleep=0.2, log=tmp_path / "train.log")
    wait_until(lambda: (root / run_id / "run.json").exists(), 90, "the run directory")
    results: list = [None] * 20
    ws_result: dict = {}
    with httpx.Client(limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)) as client:
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, read_sse(client, f"{url}/api/training/{run_id}/stream")))
            for i in range(len(results))
        ]
        threads.append(threading.Thread(target=lambda: ws_result.update(events=read_ws(
            url.replace("http", "ws") + f"/api/training/{run_id}/ws")[0])))
        for thread in threads:
            thread.start()
        assert training.wait(timeout=120) == 0
        for thread in threads:
            thread.join(timeout=60)
    expected = file_events(root, run_id)
    assert [e["type"] for e in expected if e["type"] == "epoch_end"] == ["epoch_end"] * 3
    for result in results:
        assert result.error is None and result.events == expected and result.closed_by_server
    assert ws_result["events"] == expected


def _stop_with_a_stream_open(root: Path, server: MlflowServer) -> None:
    """uvicorn waits for open responses on shutdown; the plugin ends its streams first."""
    import signal

    from trackbridge.record import RunDirectory

    RunDirectory(root, "plugin-waiting").create({"task": "regression"})  # pending: its stream never ends
    with httpx.Client() as client, client.stream("GET", f"{server.url}/api/training/plugin-waiting/stream", timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith(":")
        started = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=20)
        assert time.monotonic() - started < 10


def test_a_server_reading_mlflow_alone_serves_the_same_media_index_and_files(
    mirrored: Path, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "no-shared-disk"
    elsewhere.mkdir()
    local = [json.loads(line) for line in (mirrored / RUN_ID / "media.jsonl").read_text().splitlines()]
    assert local, "the regression reference run draws pred_vs_true"
    server = ServeProcess(elsewhere, "--tracking-uri", mlflow_server.url, log=tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            index = client.get(f"/api/runs/{RUN_ID}/media").json()
            assert index["source"] == "mlflow"
            assert sorted((e["key"], e["step"]) for e in index["media"]) == sorted((e["key"], e["step"]) for e in local)
            first = next(e for e in index["media"] if e["key"] == local[0]["key"] and e["step"] == local[0]["step"])
            assert first["path"].startswith("media/images/") and first["kind"] == "figure" and first["data"]
            image = client.get(f"/api/runs/{RUN_ID}/{first['path']}")
            assert image.status_code == 200 and image.headers["content-type"] == "image/png", image.text
            assert image.content == (mirrored / RUN_ID / local[0]["path"]).read_bytes()
            data = client.get(f"/api/runs/{RUN_ID}/{first['data']}")
            assert data.status_code == 200 and json.loads(data.content) == json.loads((mirrored / RUN_ID / local[0]["data"]).read_text())
            assert client.get(f"/api/runs/{RUN_ID}/media/checkpoints/best.ckpt").status_code == 404  # images/ only
    finally:
        server.stop()
