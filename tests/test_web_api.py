"""The live API's routes through Flask's real test client: shapes, errors, token, CORS, and a fuzz."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackbridge.events import EventEmitter, EventLog
from trackbridge.record import RunDirectory
from trackbridge.web import create_app

MLFLOW_URL = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"


def _make_run(root: Path, run_id: str, *, status: str = "completed", mlflow_url: str | None = None) -> RunDirectory:
    run_dir = RunDirectory(root, run_id)
    run_dir.create({"task": "regression", "monitor": "val_mae", "mode": "min"})
    run_dir.update_run(status=status, mlflow={"url": mlflow_url} if mlflow_url else None)
    run_dir.write_metrics([{"epoch": 1, "val_loss": 1.5, "val_mae": None, "time": "2026-01-01T00:00:00Z"}])
    emitter = EventEmitter(EventLog(run_dir.events_jsonl), run_id)
    emitter.emit("run_started", max_epochs=1)
    emitter.emit("epoch_end", epoch=1, max_epochs=1, metrics={"val_loss": 1.5, "val_mae": None})
    if status == "completed":
        emitter.emit("training_complete", status="completed")
    return run_dir


@pytest.fixture
def client(runs_root: Path):
    _make_run(runs_root, "done", mlflow_url=MLFLOW_URL)
    _make_run(runs_root, "live", status="running")
    app = create_app(runs_root, heartbeat_s=0.1)
    return app.test_client()


def _sse_ids(body: str) -> list[int]:
    return [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]


def test_api_lists_runs_with_their_mlflow_url(client) -> None:
    response = client.get("/api/runs")
    assert response.status_code == 200
    runs = {item["run_id"]: item for item in response.get_json()["runs"]}
    assert set(runs) == {"done", "live"}
    assert runs["done"]["mlflow_url"] == MLFLOW_URL and runs["live"]["mlflow_url"] is None
    assert runs["done"]["status"] == "completed" and runs["done"]["monitor"] == "val_mae"


def test_api_run_and_metrics_are_the_files(client, runs_root: Path) -> None:
    run = client.get("/api/runs/done").get_json()
    assert run == {**RunDirectory(runs_root, "done").read_run(), "mlflow_url": MLFLOW_URL, "last_event_id": 3}
    metrics = json.loads((runs_root / "done" / "metrics.json").read_text())
    assert client.get("/api/runs/done/metrics").get_json() == {**metrics, "last_event_id": 3}
    assert client.get("/api/runs/live/metrics").get_json()["last_event_id"] == 2


def test_api_stream_replays_a_finished_run_then_ends(client) -> None:
    response = client.get("/api/training/done/stream")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    assert _sse_ids(body) == [1, 2, 3]
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["run_started", "epoch_end", "training_complete"]
    assert events[1]["metrics"] == {"val_loss": 1.5, "val_mae": None}  # NaN travels as null
    assert _sse_ids(client.get("/api/training/done/stream", headers={"Last-Event-ID": "1"}).get_data(as_text=True)) == [2, 3]
    assert _sse_ids(client.get("/api/training/done/stream?last_event_id=2").get_data(as_text=True)) == [3]
    # the header (a browser's reconnect) wins over the query (its first connect)
    both = client.get("/api/training/done/stream?last_event_id=0", headers={"Last-Event-ID": "2"})
    assert _sse_ids(both.get_data(as_text=True)) == [3]


def test_api_head_of_a_live_stream_answers_at_once(client) -> None:
    response = client.head("/api/training/live/stream")  # a live run: a GET would stream until it ends
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert client.head("/api/training/nope/stream").status_code == 404


def test_api_stop_writes_the_stop_request_of_a_live_run_only(client, runs_root: Path) -> None:
    response = client.post("/api/runs/live/stop")
    assert response.status_code == 202 and response.get_json()["stop_requested"] is True
    assert RunDirectory(runs_root, "live").stop_requested()
    finished = client.post("/api/runs/done/stop")
    assert finished.status_code == 409 and "already completed" in finished.get_json()["error"]
    assert not RunDirectory(runs_root, "done").stop_requested()
    assert client.get("/api/runs/live/stop").status_code == 405  # POST only


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/runs/nope", 404),
        ("/api/runs/nope/metrics", 404),
        ("/api/training/nope/stream", 404),
        ("/api/runs/..", 400),
        ("/api/runs/%2e%2e/metrics", 400),
        ("/api/training/%2e%2e/stream", 400),
        ("/api/runs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
        ("/api/runs/%2Fetc%2Fpasswd", 404),
        ("/api/runs//etc/passwd", 404),
        ("/api/training/%00/stream", 400),
        ("/api/runs/a%00b", 400),
        ("/api/runs/" + "a" * 129, 400),
        ("/api/training/" + "a" * 129 + "/stream", 400),
        ("/api/training/done/stream?last_event_id=abc", 400),
        ("/api/training/done/stream?last_event_id=-1", 400),
        ("/api/training/done/ws", 400),  # not a WebSocket upgrade
        ("/api/runs/done/nothing", 404),
        ("/api/nothing", 404),
    ],
)
def test_api_bad_input_is_a_json_4xx(client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]
    assert "root:" not in response.get_data(as_text=True)  # never a byte of /etc/passwd


def test_api_non_numeric_last_event_id_header_is_400(client) -> None:
    response = client.get("/api/training/done/stream", headers={"Last-Event-ID": "x1"})
    assert response.status_code == 400 and "Last-Event-ID" in response.get_json()["error"]


def test_api_register_needs_a_name(client) -> None:
    for body in (None, "not json", {"alias": "x"}, {"name": ""}, {"name": 3}):
        data = body if isinstance(body, str) else json.dumps(body)
        response = client.post("/api/runs/done/register", data=data, content_type="application/json")
        assert response.status_code == 400, body
        assert "name" in response.get_json()["error"]
    assert client.post("/api/runs/nope/register", json={"name": "m"}).status_code == 404


def test_api_token_guards_every_route(runs_root: Path) -> None:
    _make_run(runs_root, "done")
    client = create_app(runs_root, token="s3cret").test_client()
    for path in ("/api/runs", "/api/runs/done", "/api/runs/done/metrics", "/api/training/done/stream", "/api/runs/x/y/z"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.get_json()["error"].startswith("missing or wrong token")
        assert client.get(f"{path}?token=wrong").status_code == 401
    assert client.post("/api/runs/done/stop").status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/training/done/stream?token=s3cret").status_code == 200  # EventSource cannot set headers


def test_api_token_comes_from_the_environment(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKBRIDGE_TOKEN", "from-env")
    monkeypatch.setenv("TRACKBRIDGE_RUNS_ROOT", str(runs_root))
    client = create_app().test_client()
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs?token=from-env").get_json() == {"runs": []}


def test_api_sends_no_cors_headers_unless_configured(runs_root: Path) -> None:
    _make_run(runs_root, "live", status="running")
    plain = create_app(runs_root).test_client()
    response = plain.get("/api/runs", headers={"Origin": "https://gui.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    # a page from another site cannot stop a run (a simple POST needs no preflight)...
    refused = plain.post("/api/runs/live/stop", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and not RunDirectory(runs_root, "live").stop_requested()
    # ...but the same origin, and clients that send no Origin (curl), can
    assert plain.post("/api/runs/live/stop", headers={"Origin": "http://localhost"}).status_code == 202

    allowed = create_app(runs_root, cors_origins="https://gui.example").test_client()
    response = allowed.get("/api/runs", headers={"Origin": "https://gui.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://gui.example"
    preflight = allowed.options(
        "/api/runs/live/stop",
        headers={"Origin": "https://gui.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204 and "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Origin" not in allowed.get("/api/runs", headers={"Origin": "https://other.example"}).headers


_ROUTES = [
    ("GET", "/api/runs/{id}"),
    ("GET", "/api/runs/{id}/metrics"),
    ("POST", "/api/runs/{id}/stop"),
    ("POST", "/api/runs/{id}/register"),
    ("GET", "/api/training/{id}/stream"),
    ("GET", "/api/training/{id}/ws"),
    ("GET", "/api/runs"),
]
_segments = st.one_of(
    st.sampled_from(["done", "..", ".", "%2e%2e", "%2F", "/etc/passwd", "%00", "a" * 129, "", "done/../done"]),
    st.text(min_size=0, max_size=140),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(_ROUTES),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
    segment=_segments,
    quoted=st.booleans(),
    last_event_id=st.one_of(st.none(), st.text(alphabet=st.characters(max_codepoint=255), max_size=30)),
    token=st.one_of(st.none(), st.just("s3cret"), st.text(alphabet=st.characters(max_codepoint=255), max_size=20)),
)
def test_api_no_route_answers_500(tmp_path: Path, route, method, segment, quoted, last_event_id, token) -> None:
    root = tmp_path / "runs"
    if not (root / "done").exists():
        root.mkdir(exist_ok=True)
        _make_run(root, "done")
    client = _fuzz_client(root)
    if route[1].endswith("/register") and segment == "done":
        segment = "not-there"  # registering a real run would talk to MLflow: not this test's business
    path = route[1].format(id=quote(segment, safe="") if quoted else segment.replace("?", "").replace("#", ""))
    headers = {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id.replace("\r", "").replace("\n", "")
    if token is not None:
        headers["Authorization"] = f"Bearer {token}".replace("\r", "").replace("\n", "")
    response = client.open(path, method=method, headers=headers)
    assert response.status_code < 500, (method, path, response.get_data(as_text=True))
    if response.status_code >= 400 and method != "HEAD":
        assert response.mimetype == "application/json" and "error" in response.get_json()


_FUZZ_CLIENTS: dict[Path, object] = {}


def _fuzz_client(root: Path):
    if root not in _FUZZ_CLIENTS:
        _FUZZ_CLIENTS.clear()
        _FUZZ_CLIENTS[root] = create_app(root, token="s3cret", heartbeat_s=0.05).test_client()
    return _FUZZ_CLIENTS[root]


def test_api_marks_a_dead_run_failed_and_ends_its_stream(runs_root: Path) -> None:
    """A run whose training process died without reporting: the list says failed, the stream ends."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = _make_run(runs_root, "crashed", status="running")
    run_dir.update_run(pid=int(gone.stdout), host=socket.gethostname(), pid_started_at=0.0)
    client = create_app(runs_root, heartbeat_s=0.1).test_client()
    runs = {r["run_id"]: r for r in client.get("/api/runs").get_json()["runs"]}
    assert runs["crashed"]["status"] == "failed" and "exited without reporting" in runs["crashed"]["error"]
    other = _make_run(runs_root, "crashed-2", status="running")
    other.update_run(pid=int(gone.stdout), host=socket.gethostname(), pid_started_at=0.0)
    fresh = create_app(runs_root, heartbeat_s=0.1).test_client()  # its stream, not a list, finds the death
    body = fresh.get("/api/training/crashed-2/stream").get_data(as_text=True)
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["run_started", "epoch_end", "training_failed"]


def test_api_routes_come_from_one_table_and_are_documented(runs_root: Path) -> None:
    """Every row of the route table is a rule of the Flask app, a route of the ASGI app, and in the README."""
    from conftest import REPO
    from trackbridge.web import create_asgi_app
    from trackbridge.web.routes import ROUTES, Kind
    from trackbridge.web.settings import WebSettings

    app = create_app(runs_root)
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    asgi = create_asgi_app(WebSettings.resolve(runs_root))
    readme = (REPO / "README.md").read_text()
    for route in ROUTES:
        assert route.flask_rule() in rules, route.name
        assert asgi.live.routes.match(route.methods[0], route.path.replace("{run_id}", "r1")
                                      .replace("{path:path}", "a/b.png").replace("{filename:path}", "x.js"))[0] is route
        if route.group == "api":
            shown = route.path.replace("{run_id}", "<run_id>").replace("{path:path}", "<path>")
            assert f"`{'WS' if route.kind is Kind.WEBSOCKET else route.methods[0]} {shown}" in readme, route.path
