"""`mlflow server --app-name trackbridge-auth`: the live API authorized by MLflow's own users and permissions.

A real MLflow server running MLflow's basic-auth app; the users, the
experiment and the grants are made through MLflow's own auth REST API.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from conftest import MlflowServer
from web_clients import finished_run, live_run, read_sse

pytestmark = pytest.mark.slow

ADMIN = ("admin", "Adm1n-pass-w0rd-42")
ALICE = ("alice", "Al1ce-pass-w0rd-42")  # no permission on the experiment
BOB = ("bob", "B0b-pass-w0rd-4242")  # READ
CAROL = ("carol", "Car0l-pass-w0rd-42")  # EDIT


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("web-auth")
    runs = base / "runs"
    runs.mkdir()
    ini = base / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{base / 'auth.db'}\nadmin_username = {ADMIN[0]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
        env.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN[1])
        env.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "test-secret-key")
        env.setenv("TRACKBRIDGE_RUNS_ROOT", str(runs))
        server = MlflowServer(base / "mlflow", extra_args=("--app-name", "trackbridge-auth")).start()
    try:
        with httpx.Client(base_url=server.url, auth=ADMIN, timeout=30) as admin:
            for user, password in (ALICE, BOB, CAROL):
                created = admin.post("/api/2.0/mlflow/users/create", json={"username": user, "password": password})
                assert created.status_code == 200, created.text
            experiment = admin.post("/api/2.0/mlflow/experiments/create", json={"name": "secret"}).json()["experiment_id"]
            for user, permission in ((BOB[0], "READ"), (CAROL[0], "EDIT")):
                granted = admin.post(
                    "/api/3.0/mlflow/users/permissions/grant",
                    json={"username": user, "resource_type": "experiment", "resource_id": experiment,
                          "permission": permission},
                )
                assert granted.status_code == 200, granted.text
        link = {"experiment_id": experiment, "run_id": "0" * 32, "url": None}
        finished_run(runs, "seen")
        _link(runs / "seen", link)
        live_run(runs, "stoppable", mlflow=link)
        finished_run(runs, "elsewhere")
        _link(runs / "elsewhere", {"experiment_id": "0", "run_id": "1" * 32, "url": None})
        finished_run(runs, "unmirrored")
        (runs / "seen" / "media.jsonl").write_text('{"key": "k", "step": 1, "path": "media/k.png"}\n')
        yield server, runs, experiment
    finally:
        server.stop()


def _link(run_dir: Path, mlflow: dict) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    run["mlflow"] = mlflow
    (run_dir / "run.json").write_text(json.dumps(run))


def _client(server: MlflowServer, who: tuple[str, str] | None) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=who, timeout=30)


def test_auth_no_credentials_is_401_everywhere(auth) -> None:
    server, _, _ = auth
    with _client(server, None) as anonymous:
        for path in ("/api/runs", "/api/runs/seen", "/api/runs/seen/metrics", "/api/training/seen/stream",
                     "/trackbridge/", "/api/runs/nope/x"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
        assert anonymous.post("/api/runs/stoppable/stop").status_code == 401
    with _client(server, (BOB[0], "wrong-password-123")) as wrong:
        assert wrong.get("/api/runs").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_auth_a_user_without_permission_gets_403(auth) -> None:
    server, runs, _ = auth
    with _client(server, ALICE) as alice:
        for path in ("/api/runs/seen", "/api/runs/seen/metrics", "/api/runs/seen/media", "/api/runs/seen/system",
                     "/api/runs/seen/media/k.png", "/api/training/seen/stream"):
            response = alice.get(path)
            assert response.status_code == 403, (path, response.text)
            assert "READ" in response.json()["error"]
        assert alice.get("/api/runs").json()["runs"] == []  # the list holds only what she may read
        assert alice.post("/api/runs/stoppable/stop").status_code == 403
        assert alice.get("/trackbridge/").status_code == 200  # signed in: the page itself is for any user
    assert not (runs / "stoppable" / "stop-request.json").exists()


def test_auth_read_sees_the_run_but_cannot_stop_it(auth) -> None:
    server, runs, _ = auth
    with _client(server, BOB) as bob:
        assert bob.get("/api/runs/seen").json()["status"] == "completed"
        assert bob.get("/api/runs/seen/metrics").status_code == 200
        assert bob.get("/api/runs/seen/media").json()["media"][0]["key"] == "k"
        stream = read_sse(bob, f"{server.url}/api/training/seen/stream", timeout=30)
        assert stream.error is None and stream.ids == [1, 2, 3]
        assert sorted(r["run_id"] for r in bob.get("/api/runs").json()["runs"]) == ["seen", "stoppable"]
        assert bob.get("/api/runs/elsewhere").status_code == 403
        assert bob.get("/api/runs/unmirrored").status_code == 403  # no experiment: admins only
        refused = bob.post("/api/runs/stoppable/stop")
        assert refused.status_code == 403 and "EDIT" in refused.json()["error"]
        assert bob.post("/api/runs/seen/register", json={"name": "m"}).status_code == 403
    assert not (runs / "stoppable" / "stop-request.json").exists()


def test_auth_edit_stops_and_admin_sees_everything(auth) -> None:
    server, runs, _ = auth
    with _client(server, CAROL) as carol:
        response = carol.post("/api/runs/stoppable/stop")
        assert response.status_code == 202, response.text
    assert (runs / "stoppable" / "stop-request.json").exists()
    with _client(server, ADMIN) as admin:
        listed = sorted(r["run_id"] for r in admin.get("/api/runs").json()["runs"])
        assert listed == ["elsewhere", "seen", "stoppable", "unmirrored"]
        assert admin.get("/api/runs/unmirrored/metrics").status_code == 200


def test_auth_mlflow_keeps_its_own_auth(auth) -> None:
    """MLflow's UI and REST API answer as under `--app-name basic-auth`."""
    server, _, experiment = auth
    path = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    with _client(server, None) as anonymous:
        assert anonymous.get(path).status_code == 401
        assert anonymous.get("/").status_code == 401
    with _client(server, ALICE) as alice:
        assert alice.get(path).status_code == 403
        assert alice.get("/").status_code == 200
    with _client(server, BOB) as bob:
        assert bob.get(path).json()["experiment"]["name"] == "secret"
        assert bob.post("/api/2.0/mlflow/experiments/update", json={"experiment_id": experiment, "new_name": "x"}).status_code == 403
    with _client(server, ADMIN) as admin:
        assert admin.get(path).status_code == 200
