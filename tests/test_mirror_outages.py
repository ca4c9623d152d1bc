"""MLflow outages never fail or slow training; ``trackbridge sync`` then makes MLflow equal the record.

Each test trains the same slow tiny model twice, undisturbed and through an
outage, and compares the wall times of ``Trainer.fit`` (minus the time the
test itself spends stopping or waiting for the server inside a hook).
"""

from __future__ import annotations

import threading

import pytest
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory
from trackbridge.mirror.sync import sync_run

from conftest import MlflowServer, free_port, run_cli
from mirror_helpers import AtEpochStart, assert_history_equals_record, read_log, timed_fit, total_points

pytestmark = pytest.mark.slow

EPOCHS = 5  # timed_fit's: 8 steps of 50 ms per epoch, half a second an epoch, time to act in epoch 2
SLACK_S = 3.0  # "within a few seconds of an undisturbed run"


def sync(run_dir: RunDirectory, *args: str):
    result = run_cli("sync", run_dir.run_id, "--runs-root", str(run_dir.runs_root), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_sync_converges(run_dir: RunDirectory, url: str, tracking_uri: str | None = None) -> None:
    """After one ``trackbridge sync`` MLflow equals the record; a second sync sends nothing."""
    sync(run_dir, *(("--tracking-uri", tracking_uri) if tracking_uri else ()))
    client = MlflowClient(url)
    mlflow_run_id = run_dir.read_run()["mlflow"]["run_id"]
    points = assert_history_equals_record(client, run_dir)
    assert client.get_run(mlflow_run_id).info.status == "FINISHED"
    assert run_dir.read_run()["mlflow"]["artifacts_pending"] == []
    second = sync_run(run_dir, tracking_uri)  # in-process this time: same code, no interpreter start
    assert not second.changed and second.points_added == 0, second
    assert total_points(client, mlflow_run_id) == points


def outage_messages(run_dir: RunDirectory) -> int:
    return read_log(run_dir).count("is unreachable")


@pytest.fixture(scope="module")
def _module_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("own-mlflow")).start()
    yield server
    server.kill()


@pytest.fixture
def own_server(_module_server):
    """A server the test may kill and restart (same port, same database); up when the test starts."""
    if _module_server.proc is None or _module_server.proc.poll() is not None:
        _module_server.start()
    return _module_server


def test_mirror_server_down_from_the_start(runs_root, mlflow_server):
    _, _, undisturbed = timed_fit(runs_root, mlflow_server.url)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir, mirror, took = timed_fit(runs_root, dead)

    assert took <= undisturbed + SLACK_S, (took, undisturbed)
    assert mirror.worker.stats.outages == 1 and outage_messages(run_dir) == 1
    cursor = run_dir.read_run()["mlflow"]
    assert cursor["run_id"] is None and "metrics.json" in cursor["artifacts_pending"]
    assert "trackbridge sync" in read_log(run_dir)
    # the run never reached MLflow: sync creates it on the server named now
    assert_sync_converges(run_dir, mlflow_server.url, tracking_uri=mlflow_server.url)


def test_mirror_server_killed_in_epoch_2_of_5(runs_root, own_server):
    _, _, undisturbed = timed_fit(runs_root, own_server.url)
    run_dir, mirror, took = timed_fit(runs_root, own_server.url, AtEpochStart(1, own_server.kill))

    assert took <= undisturbed + SLACK_S, (took, undisturbed)
    assert mirror.worker.stats.outages == 1 and outage_messages(run_dir) == 1
    cursor = run_dir.read_run()["mlflow"]
    assert cursor["run_id"] is not None and (cursor["last_epoch_mirrored"] or 0) < EPOCHS
    client = MlflowClient(own_server.url)
    own_server.start()  # back, same port and database; the run is still RUNNING there
    assert client.get_run(cursor["run_id"]).info.status == "RUNNING"
    assert_sync_converges(run_dir, own_server.url)


def test_mirror_server_stopped_and_restarted_mid_run(runs_root, own_server):
    _, _, undisturbed = timed_fit(runs_root, own_server.url)
    restarted = threading.Thread(target=own_server.start)

    def stop_and_restart() -> None:
        own_server.stop()
        restarted.start()

    run_dir, mirror, took = timed_fit(
        runs_root, own_server.url,
        AtEpochStart(1, stop_and_restart),
        AtEpochStart(3, restarted.join),  # the server is back before the last two epochs
    )
    assert took <= undisturbed + SLACK_S, (took, undisturbed)
    assert mirror.worker.stats.outages == 1 and outage_messages(run_dir) == 1
    # the worker caught up by itself: MLflow already equals the record, sync has nothing to add
    client = MlflowClient(own_server.url)
    points = assert_history_equals_record(client, run_dir)
    assert run_dir.read_run()["mlflow"]["status_mirrored"] == "FINISHED"
    assert not sync_run(run_dir).changed
    assert total_points(client, run_dir.read_run()["mlflow"]["run_id"]) == points
