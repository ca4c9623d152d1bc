"""MLflow answers badly (403 to log-batch, 500, 429 with Retry-After, 20 s delays, no server at all), for real.

Each fault is made by :class:`fault_proxy.FaultProxy` in front of the
session's real ``mlflow server``; training runs the whole stack in this
process. The promises: training is not slowed beyond the flush deadline, the
cursor never says more reached MLflow than did, the console says what
happened (HTTP status, MLflow error code), and ``trackbridge sync`` converges.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from trackbridge import RunDirectory
from trackbridge.mirror.backend import RestBackend
from trackbridge.mirror.errors import FailureKind, MirrorFailure
from trackbridge.mirror.sync import sync_run

from conftest import free_port, run_cli, wait_until
from fault_proxy import FaultProxy
from mirror_helpers import AtEpochStart, assert_history_equals_record, read_log, sync_cli, timed_fit, total_points

pytestmark = pytest.mark.slow

SLACK_S = 3.0  # "within a few seconds of an undisturbed run"
FLUSH_S = 4.0


@pytest.fixture
def proxy(mlflow_server):
    with FaultProxy(mlflow_server.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, mlflow_server) -> float:
    """Fit time of the slow tiny model with the stack, MLflow answering well (once for the module)."""
    _, _, took = timed_fit(tmp_path_factory.mktemp("undisturbed"), mlflow_server.url)
    return took


def assert_converged(run_dir: RunDirectory, client: MlflowClient) -> None:
    """MLflow equals the record; a second sync sends nothing."""
    points = assert_history_equals_record(client, run_dir)
    cursor = run_dir.read_run()["mlflow"]
    assert client.get_run(cursor["run_id"]).info.status == "FINISHED"
    assert cursor["artifacts_pending"] == [] and cursor["refused"] is None
    again = sync_run(run_dir)
    assert not again.changed, again
    assert total_points(client, cursor["run_id"]) == points


def test_rest_backend_names_status_code_retry_after_and_the_unknown_host(proxy):
    backend = RestBackend(proxy.url)
    proxy.fail(500)
    with pytest.raises(MirrorFailure) as info:
        backend.get_experiment_by_name("x")
    assert info.value.kind is FailureKind.RETRYABLE
    assert str(info.value) == "HTTP 500 INTERNAL_ERROR: injected 500 by the test's fault proxy"
    proxy.fail(429, retry_after=2)
    with pytest.raises(MirrorFailure) as info:
        backend.get_experiment_by_name("x")
    assert (info.value.status, info.value.code, info.value.retry_after_s) == (429, "REQUEST_LIMIT_EXCEEDED", 2.0)
    assert proxy.count("get-by-name", 429) == 1  # one request: no retries hidden inside it
    proxy.fail(403, only="log-batch")
    with pytest.raises(MirrorFailure) as info:
        backend.log_batch("r", tags=[("k", "v")])
    assert info.value.refused and "PERMISSION_DENIED" in str(info.value)
    with pytest.raises(MirrorFailure) as info:
        RestBackend("http://no-such-host.invalid:5000").get_run("r")
    assert info.value.kind is FailureKind.UNREACHABLE
    assert "cannot resolve host 'no-such-host.invalid'" in str(info.value)


def test_refused_log_batch_is_counted_said_and_synced_later(runs_root, proxy, undisturbed, mlflow_server):
    def refuse() -> None:
        proxy.fail(403, only="runs/log-batch", message="log-batch is closed for maintenance")

    run_dir, mirror, took = timed_fit(runs_root, proxy.url, AtEpochStart(1, refuse), AtEpochStart(3, proxy.heal))

    assert took <= undisturbed + SLACK_S, (took, undisturbed)
    assert mirror.delivered is False  # close() reports that something did not reach MLflow
    cursor = run_dir.read_run()["mlflow"]
    assert cursor["refused"]["points"] > 0 and cursor["refused"]["operations"] == ["points"]
    assert "HTTP 403 PERMISSION_DENIED: log-batch is closed for maintenance" in cursor["refused"]["message"]
    assert (cursor["last_epoch_mirrored"] or 0) < 3  # the cursor does not say the refused epochs arrived
    said = read_log(run_dir)
    assert said.count("HTTP 403 PERMISSION_DENIED") == 1 and f"trackbridge sync {run_dir.run_id}" in said

    refuse()  # still refusing: sync fails, says MLflow's message, and moves the cursor no further
    result = sync_cli(run_dir)
    assert result.exit_code == 1, result.stderr[-3000:]
    assert "log-batch is closed for maintenance" in result.stderr and "PERMISSION_DENIED" in result.stderr
    assert run_dir.read_run()["mlflow"]["last_epoch_mirrored"] == cursor["last_epoch_mirrored"]

    proxy.heal()
    result = sync_cli(run_dir)
    assert result.exit_code == 0, result.stderr[-3000:]
    assert f"syncing to {proxy.url} (from run.json)" in result.stderr
    assert_converged(run_dir, MlflowClient(mlflow_server.url))


def test_500_then_429_then_slow_answers_cost_at_most_the_flush_deadline(runs_root, proxy, undisturbed, mlflow_server):
    def answered(status: int):
        return lambda: wait_until(lambda: proxy.count("", status) > 0, 30, f"a {status} answer")

    def then_429() -> None:
        answered(500)()
        proxy.fail(429, retry_after=2)

    def then_slow() -> None:
        answered(429)()
        proxy.delay(20.0)

    run_dir, mirror, took = timed_fit(
        runs_root, proxy.url, AtEpochStart(1, lambda: proxy.fail(500)), AtEpochStart(2, then_429),
        AtEpochStart(3, then_slow), flush_timeout_s=FLUSH_S,
    )
    assert took <= undisturbed + FLUSH_S + SLACK_S, (took, undisturbed)
    said = read_log(run_dir)
    assert "answered HTTP 500 INTERNAL_ERROR" in said and "answered HTTP 429 REQUEST_LIMIT_EXCEEDED" in said
    assert "Retry-After" in said
    # the try after a 429 waited as the server asked
    log = list(proxy.log)
    first_429 = next(i for i, entry in enumerate(log) if entry[3] == 429)
    if first_429 + 1 < len(log):
        assert log[first_429 + 1][0] - log[first_429][0] >= 2.0 - 0.05, log[first_429:first_429 + 2]
    assert mirror.delivered is False

    proxy.heal()
    wait_until(lambda: proxy.in_flight == 0, 40, "the delayed requests to finish")
    result = sync_cli(run_dir)
    assert result.exit_code == 0, result.stderr[-3000:]
    assert_converged(run_dir, MlflowClient(mlflow_server.url))


def test_tracking_uri_from_the_environment_is_kept_for_sync_when_never_connected(
        tmp_path, mlflow_server, monkeypatch):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"  # nothing listens there during the run
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir, mirror, _ = timed_fit(tmp_path / "runs", None, epochs=2, sleep_s=0.0, flush_timeout_s=1.0)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cursor = run_dir.read_run()["mlflow"]
    assert cursor["run_id"] is None and cursor["tracking_uri"] == uri
    assert mirror.delivered is False and "is unreachable" in read_log(run_dir)

    with FaultProxy(mlflow_server.url, port=port):  # the server is up now, at the same address
        result = run_cli("sync", run_dir.run_id, "--runs-root", "runs", cwd=tmp_path)  # a new shell, no env
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"syncing to {uri} (from run.json)" in result.stderr
        assert "created in MLflow" in result.stdout
        assert not (tmp_path / "mlruns").exists()  # not into the embedded default
        assert_converged(run_dir, MlflowClient(mlflow_server.url))


def test_users_own_mlflow_calls_keep_mlflows_retries_while_the_mirror_stays_bounded(
        runs_root, proxy, mlflow_server):
    client = MlflowClient(proxy.url)  # the user's own client, in the training process
    experiment = client.get_experiment_by_name("Default").experiment_id
    user_run = client.create_run(experiment).info.run_id
    outcome: dict[str, float] = {}

    def users_call() -> None:
        started = time.monotonic()
        client.log_metric(user_run, "user_metric", 1.0)  # MLflow's defaults: retries with backoff
        outcome["took"] = time.monotonic() - started

    user = threading.Thread(target=users_call)

    def outage() -> None:
        proxy.fail(503)
        user.start()
        threading.Timer(3.0, proxy.heal).start()

    run_dir, mirror, _ = timed_fit(runs_root, proxy.url, AtEpochStart(1, outage), epochs=4, sleep_s=0.15)
    user.join(60)

    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert outcome.get("took", 0) >= 2.5, outcome  # the user's call waited the outage out, and succeeded
    assert proxy.count("runs/log-metric", 503) >= 2  # ... by retrying, as MLflow's defaults say
    assert client.get_metric_history(user_run, "user_metric")[0].value == 1.0
    # the mirror: one HTTP request per attempt of the worker, no retries inside it
    assert 1 <= proxy.count("runs/log-batch", 503) <= mirror.worker.stats.failures
    assert mirror.worker.stats.outages == 1 and mirror.delivered is True
    assert_history_equals_record(MlflowClient(mlflow_server.url), run_dir)
