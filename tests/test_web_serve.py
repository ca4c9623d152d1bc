"""`trackbridge serve` in one process, a real training in another, real HTTP and WebSocket clients."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_cli
from web_clients import (
    ServeProcess,
    epoch_metrics,
    file_events,
    read_sse,
    read_ws,
    run_status,
    start_training,
)
from conftest import wait_until

pytestmark = pytest.mark.slow

N_CLIENTS = 200


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-serve") / "runs"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def server(root: Path):
    serve = ServeProcess(root)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def watched(root: Path, server: ServeProcess) -> dict[str, Any]:
    """One training watched live by 200 SSE clients, a WebSocket client and a client that never reads."""
    run_id = "watched"
    training = start_training(root, run_id, epochs=3, batches=4, sleep=0.25, log=root.parent / "watched.log")
    wait_until(lambda: (root / run_id / "run.json").exists(), 90, "the run directory")
    url = f"{server.url}/api/training/{run_id}/stream"

    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /api/training/{run_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    results: list[Any] = [None] * N_CLIENTS
    ws_result: dict[str, Any] = {}
    with httpx.Client(limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)) as client:

        def sse(i: int) -> None:
            results[i] = read_sse(client, url)

        def ws() -> None:
            ws_result["events"], ws_result["others"] = read_ws(server.url.replace("http", "ws") + f"/api/training/{run_id}/ws")

        threads = [threading.Thread(target=sse, args=(i,)) for i in range(N_CLIENTS)]
        threads.append(threading.Thread(target=ws))
        for thread in threads:
            thread.start()
        training_rc = training.wait(timeout=180)
        training_ended = time.time()
        for thread in threads:
            thread.join(timeout=60)
    yield {
        "run_id": run_id, "results": results, "ws": ws_result, "training_rc": training_rc,
        "training_ended": training_ended, "stalled": stalled,
    }
    stalled.close()


def test_serve_sse_clients_each_receive_every_event_then_the_stream_closes(root: Path, watched) -> None:
    assert watched["training_rc"] == 0
    events = file_events(root, watched["run_id"])
    expected_ids = [e["id"] for e in events]
    assert expected_ids == list(range(1, len(events) + 1))
    for i, result in enumerate(watched["results"]):
        assert result is not None and result.error is None, (i, result and result.error)
        assert result.ids == expected_ids, i
        assert result.closed_by_server, i
    # the events themselves: run_started, one epoch_end per epoch with exactly metrics.json, the terminal event
    received = watched["results"][0].events
    assert received == events
    assert received[0]["type"] == "run_started"
    epoch_ends = [e for e in received if e["type"] == "epoch_end"]
    assert [e["epoch"] for e in epoch_ends] == [1, 2, 3]
    assert [e["metrics"] for e in epoch_ends] == epoch_metrics(root, watched["run_id"])
    assert received[-1]["type"] == "training_complete"


def test_serve_websocket_gets_the_same_sequence(root: Path, watched) -> None:
    assert watched["ws"]["events"] == file_events(root, watched["run_id"])
    assert watched["ws"]["others"] == []


def test_serve_stalled_client_delays_neither_others_nor_training(root: Path, watched) -> None:
    """A client that never reads is still connected; everyone else got the end within a second or two."""
    stalled = watched["stalled"]
    stalled.setblocking(False)
    try:
        assert stalled.recv(1) != b""  # still connected (it never read a byte)
    except BlockingIOError:
        pass
    terminal_receipts = [r.received_at[-1] for r in watched["results"]]
    assert max(terminal_receipts) - watched["training_ended"] < 5.0
    run = json.loads((root / watched["run_id"] / "run.json").read_text())
    records = json.loads((root / watched["run_id"] / "metrics.json").read_text())["epochs"]
    # 4 batches x 0.25 s of sleep per epoch: the epoch took that, plus compute, not a wait on a client
    assert all(r["duration_s"] < 1.0 + 2.0 for r in records), [r["duration_s"] for r in records]
    assert run["status"] == "completed"


def test_serve_last_event_id_resumes_with_exactly_the_next_events(root: Path, server: ServeProcess, watched) -> None:
    events = file_events(root, watched["run_id"])
    url = f"{server.url}/api/training/{watched['run_id']}/stream"
    with httpx.Client() as client:
        full = read_sse(client, url)
        assert full.ids == [e["id"] for e in events] and full.closed_by_server  # a finished run replays fully
        for k in (1, 4, len(events) - 1, len(events)):
            assert read_sse(client, url, headers={"Last-Event-ID": str(k)}).ids == list(range(k + 1, len(events) + 1))
        assert read_sse(client, f"{url}?last_event_id=3").ids == list(range(4, len(events) + 1))
    ws_events, _ = read_ws(server.url.replace("http", "ws") + f"/api/training/{watched['run_id']}/ws?last_event_id=2")
    assert [e["id"] for e in ws_events] == list(range(3, len(events) + 1))


def test_serve_stop_over_post_and_over_websocket_end_trainings_as_stopped(root: Path, server: ServeProcess) -> None:
    by_post = start_training(root, "stop-post", epochs=50, batches=5, sleep=0.1, log=root.parent / "stop-post.log")
    by_ws = start_training(root, "stop-ws", epochs=50, batches=5, sleep=0.1, log=root.parent / "stop-ws.log")
    try:
        for run_id in ("stop-post", "stop-ws"):
            wait_until(lambda: run_status(root, run_id) == "running", 120, f"{run_id} running")
        ws_url = server.url.replace("http", "ws") + "/api/training/stop-ws/ws"
        ws_result: dict[str, Any] = {}
        ws_thread = threading.Thread(
            target=lambda: ws_result.update(zip(("events", "others"), read_ws(
                ws_url, send={"type": "stop"}, send_when=lambda e: e.get("type") == "epoch_end"
            )))
        )
        ws_thread.start()
        # A cross-site page cannot stop it (issue 11): refused, nothing written, the run trains on.
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"}):
            refused = httpx.post(f"{server.url}/api/runs/stop-post/stop", headers=headers, content=b"a=1")
            assert refused.status_code == 403, headers
        assert not (root / "stop-post" / "stop-request.json").exists()
        time.sleep(1.0)
        assert by_post.poll() is None and run_status(root, "stop-post") == "running"
        response = httpx.post(f"{server.url}/api/runs/stop-post/stop")
        assert response.status_code == 202 and response.json()["stop_requested"] is True
        assert by_post.wait(timeout=60) == 0
        ws_thread.join(timeout=90)
        assert by_ws.wait(timeout=60) == 0
    finally:
        for proc in (by_post, by_ws):
            if proc.poll() is None:
                proc.kill()
    assert run_status(root, "stop-post") == "stopped"
    assert run_status(root, "stop-ws") == "stopped"
    assert ws_result["others"] == [{"type": "stop_requested", "run_id": "stop-ws", "status": "running", "stop_requested": True}]
    assert ws_result["events"][-1]["type"] == "training_stopped"
    assert len(json.loads((root / "stop-ws" / "metrics.json").read_text())["epochs"]) < 50
    assert httpx.post(f"{server.url}/api/runs/stop-post/stop").status_code == 409  # already stopped


@pytest.mark.parametrize(
    ("raw_path", "status"),
    [
        ("/api/runs/../../etc/passwd", 404),
        ("/api/runs/..", 400),
        ("/api/runs/%2e%2e/metrics", 400),
        ("/api/training/%2e%2e%2f%2e%2e%2fetc%2fpasswd/stream", 404),
        ("/api/runs/%2Fetc%2Fpasswd", 404),
        ("/api//etc/passwd", 404),
        ("/api/training/a%00b/stream", 400),
        ("/api/runs/" + "x" * 300, 400),
        ("/api/training/nope/stream", 404),
    ],
)
def test_serve_bad_paths_get_json_4xx_over_real_http(server: ServeProcess, raw_path: str, status: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("GET", raw_path, skip_accept_encoding=True)  # sent byte for byte, not normalized
    connection.endheaders()
    response = connection.getresponse()
    body = response.read().decode()
    assert response.status == status, body
    assert response.getheader("Content-Type") == "application/json"
    assert "root:" not in body and json.loads(body)["error"]


def test_serve_non_numeric_last_event_id_is_400_json(server: ServeProcess, watched) -> None:
    response = httpx.get(f"{server.url}/api/training/{watched['run_id']}/stream", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400 and "Last-Event-ID" in response.json()["error"]


def test_serve_with_token_refuses_missing_and_wrong_tokens(root: Path) -> None:
    guarded = ServeProcess(root, env={"TRACKBRIDGE_TOKEN": "t0ken"})
    try:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = httpx.get(f"{guarded.url}/api/runs", headers=headers)
            assert response.status_code == 401 and response.json()["error"]
        assert httpx.get(f"{guarded.url}/api/runs", headers={"Authorization": "Bearer t0ken"}).status_code == 200
        assert httpx.get(f"{guarded.url}/api/runs?token=t0ken").status_code == 200
    finally:
        guarded.stop()


def test_serve_cli_refuses_a_port_in_use(root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_cli("serve", "--port", str(busy.getsockname()[1]), "--runs-root", str(root), timeout=60)
    assert result.returncode == 2
    assert "is in use; pick another with --port" in result.stderr


def test_serve_ctrl_c_ends_open_streams_and_exits_at_once(tmp_path: Path) -> None:
    """A stream of a run that never ends must not keep the server from stopping."""
    import signal

    from trackbridge.record import RunDirectory

    root = tmp_path / "runs"
    RunDirectory(root, "waiting").create({"task": "regression"})  # pending: its stream would never end
    server = ServeProcess(root)
    try:
        with httpx.Client() as client, client.stream("GET", f"{server.url}/api/training/waiting/stream", timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith(":")  # the stream is open
            started = time.monotonic()
            server.proc.send_signal(signal.SIGINT)
            assert server.proc.wait(timeout=15) == 0
            assert time.monotonic() - started < 5
            assert [line for line in lines if line.startswith("data: ")] == []  # ended by the server, not by the run
    finally:
        server.stop()
