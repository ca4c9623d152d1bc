"""Issue 11 on real server processes: DNS rebinding, cross-site control, limits that keep the server answering,
tokens out of the logs. Raw sockets play the clients that lie (foreign Host, trickled headers, huge bodies)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import MlflowServer, wait_until
from web_clients import (
    EVIL, ServeProcess, assert_rebinding_refused, finished_run, get_raw, live_run, post_raw, read_sse, read_ws,
    rss_mb, ws_status,
)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-security") / "runs"
    path.mkdir()
    finished_run(path, "done")
    live_run(path, "live")
    return path


@pytest.fixture(scope="module")
def server(root: Path):
    serve = ServeProcess(root, "--allowed-hosts", "named.example", log=root.parent / "serve.log")
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def capped(root: Path):
    serve = ServeProcess(root, "--max-streams", "5", "--header-timeout", "3", log=root.parent / "capped.log")
    yield serve
    serve.stop()


def test_serve_refuses_a_rebound_host_on_every_route(server: ServeProcess, root: Path) -> None:
    assert_rebinding_refused(server.port, root, "/")
    assert get_raw(server.port, "/health", f"{EVIL}:1")[0] == 200  # a probe's Host is anything: /health says nothing


def test_serve_allowed_hosts_admits_a_named_host(server: ServeProcess, root: Path) -> None:
    host = f"named.example:{server.port}"
    status, _, body = get_raw(server.port, "/api/runs", host, Origin=f"http://{host}")
    assert status == 200 and {r["run_id"] for r in json.loads(body)["runs"]} >= {"done", "live"}
    assert get_raw(server.port, "/", host)[0] == 200
    assert ws_status(server.port, "/api/training/done/ws", host, f"http://{host}") == 101
    for allowed in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}", "127.0.0.1"):
        assert get_raw(server.port, "/api/runs", allowed)[0] == 200, allowed


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Content_Type": "application/x-www-form-urlencoded", "Sec_Fetch_Site": "cross-site"},
        {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
    ],
    ids=["foreign-origin", "null-origin", "form-cross-site-no-origin", "other-port"],
)
def test_serve_refuses_cross_site_stop_and_writes_nothing(server: ServeProcess, root: Path, headers: dict) -> None:
    status, _, body = post_raw(server.port, "/api/runs/live/stop", f"127.0.0.1:{server.port}", b"a=1", **headers)
    assert status == 403 and "cross-site" in json.loads(body)["error"]
    status, _, _ = post_raw(server.port, "/api/runs/done/register", f"127.0.0.1:{server.port}", b'{"name": "m"}', **headers)
    assert status == 403
    assert not (root / "live" / "stop-request.json").exists()
    if "Origin" in headers:
        assert ws_status(server.port, "/api/training/done/ws", f"127.0.0.1:{server.port}", headers["Origin"]) == 403


def test_serve_same_origin_stop_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    live_run(root, "mine")
    serve = ServeProcess(root)
    try:
        host = f"127.0.0.1:{serve.port}"
        status, _, body = post_raw(serve.port, "/api/runs/mine/stop", host, Origin=f"http://{host}", Sec_Fetch_Site="same-origin")
        assert status == 202, body
        assert (root / "mine" / "stop-request.json").exists()
    finally:
        serve.stop()


def test_serve_stream_cap_answers_503_and_the_api_keeps_answering(capped: ServeProcess, root: Path) -> None:
    """At the cap the next stream gets 503 + Retry-After; /health, the runs API and the page answer within 1 s."""
    url = f"{capped.url}/api/training/live/stream"  # a live run: its streams stay open
    with httpx.Client(timeout=10) as client:
        streams = [client.stream("GET", url) for _ in range(5)]
        responses = [s.__enter__() for s in streams]
        try:
            assert all(r.status_code == 200 for r in responses)
            refused = client.get(url)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
            assert "maximum of 5 open streams" in refused.json()["error"]
            assert ws_status(capped.port, "/api/training/live/ws", f"127.0.0.1:{capped.port}", None) == 503
            for path in ("/health", "/api/runs", "/api/runs/done", "/"):
                started = time.monotonic()
                assert client.get(f"{capped.url}{path}").status_code == 200
                assert time.monotonic() - started < 1.0, path
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        # the slots come back when the clients leave
        wait_until(lambda: client.head(url).status_code == 200 and _stream_opens(client, url), 10, "a free slot")


def _stream_opens(client: httpx.Client, url: str) -> bool:
    with client.stream("GET", url) as response:
        return response.status_code == 200


def test_serve_answers_while_300_connections_trickle_their_headers(capped: ServeProcess) -> None:
    """300 raw sockets send one header byte per second; the API answers within 1 s; the tricklers are cut off."""
    request = f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{capped.port}\r\nX-Slow: {'a' * 40}\r\n\r\n".encode()
    tricklers = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(300)]
    stop = threading.Event()

    def trickle() -> None:
        position = 0
        while not stop.is_set() and position < len(request):
            for sock in tricklers:
                try:
                    sock.send(request[position:position + 1])
                except OSError:
                    pass
            position += 1
            stop.wait(1.0)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        timings = []
        with httpx.Client(timeout=5) as client:
            for _ in range(4):
                for path in ("/health", "/api/runs", "/"):
                    started = time.monotonic()
                    assert client.get(f"{capped.url}{path}").status_code == 200
                    timings.append(time.monotonic() - started)
                time.sleep(0.5)
        assert max(timings) < 1.0, timings
        # --header-timeout 3: a head still incomplete after 3 s is dropped (an idle half-open connection too)
        deadline = time.monotonic() + 10
        open_ = tricklers
        while open_ and time.monotonic() < deadline:
            open_ = [s for s in open_ if not _closed_by_peer(s)]
            time.sleep(0.2)
        assert open_ == [], f"{len(open_)} trickling connections still open"
    finally:
        stop.set()
        for sock in tricklers:
            sock.close()


def test_serve_closes_an_idle_connection_that_never_sends(capped: ServeProcess) -> None:
    with socket.create_connection(("127.0.0.1", capped.port)) as sock:
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the server
        assert 2.5 < time.monotonic() - started < 6


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def test_serve_refuses_a_150_mb_body_before_reading_it(server: ServeProcess) -> None:
    """413 at once, and the server's memory stays within 50 MB of idle while the client pushes 150 MB."""
    idle = rss_mb(server.proc.pid)
    size = 150 * 2**20
    peak = {"rss": idle}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["rss"] = max(peak["rss"], rss_mb(server.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    head = (
        f"POST /api/runs/done/register HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            for _ in range(150):
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: the rest is never read
        answer = sock.recv(65536)
    # the same without a Content-Length: a chunked body is cut off at the cap
    chunked = (
        f"POST /api/runs/done/register HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(chunked)
        try:
            for _ in range(150):
                sock.sendall(b"100000\r\n" + chunk + b"\r\n")
        except OSError:
            pass
        chunked_answer = sock.recv(65536)
    sampling.set()
    sampler.join()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert chunked_answer.startswith(b"HTTP/1.1 413"), chunked_answer[:200]
    assert peak["rss"] - idle < 50, (idle, peak["rss"], sent)
    print(f"150 MB body: 413; server RSS idle {idle:.0f} MB, peak {peak['rss']:.0f} MB; client pushed {sent >> 20} MB")


# -- tokens never in a log line ------------------------------------------------------------------
TOKEN = "s3cret-T0ken-9f2c"


def _token_session(base: str, ws_base: str, *, page: str) -> None:
    """Page loads, assets, API calls and streams with ?token= (and the cookie the page sets)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        response = client.get(f"{page}?token={TOKEN}")
        assert response.status_code == 200, response.text[:300]
        assert client.get(f"{page}assets/dashboard.js").status_code == 200  # with the cookie alone
        assert client.get(f"{page}runs/done?token={TOKEN}").status_code == 200
        assert client.get(f"/api/runs?token={TOKEN}").status_code == 200
        assert client.get(f"/api/runs/done/metrics?token={TOKEN}&x=1").status_code == 200
        assert client.get(f"/api/runs/nope?token={TOKEN}").status_code == 404
        assert client.get(f"/api/runs?token=wrong-{TOKEN}").status_code == 401
        stream = read_sse(client, f"{base}/api/training/done/stream?token={TOKEN}")
        assert stream.error is None and stream.ids == [1, 2, 3]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post(f"/api/runs/done/stop?token={TOKEN}").status_code == 409
        assert client.get("/api/runs", headers=headers).status_code == 200
    events, _ = read_ws(f"{ws_base}/api/training/done/ws?token={TOKEN}", timeout=30)
    assert [e["id"] for e in events] == [1, 2, 3]


def _assert_no_token(log: str) -> None:
    assert TOKEN not in log, [line for line in log.splitlines() if TOKEN in line][:5]
    assert "token=[redacted]" in log  # the access log is on, and it was redacted (not silenced)


def test_serve_access_log_never_holds_the_token(root: Path) -> None:
    serve = ServeProcess(root, env={"TRACKBRIDGE_TOKEN": TOKEN}, log=root.parent / "token-serve.log")
    try:
        _token_session(serve.url, serve.url.replace("http", "ws"), page="/")
    finally:
        serve.stop()
    _assert_no_token(serve.log.read_text())


@pytest.mark.parametrize("mode", ["uvicorn", "gunicorn"])
def test_plugin_access_log_never_holds_the_token(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("TRACKBRIDGE_RUNS_ROOT", str(root))
    monkeypatch.setenv("TRACKBRIDGE_TOKEN", TOKEN)
    extra: tuple[str, ...] = ("--app-name", "trackbridge")
    if mode == "gunicorn":  # gunicorn's access log is off unless asked for: ask, as a team would
        extra += ("--gunicorn-opts", "--worker-class gthread --threads 16 --access-logfile -")
    server = MlflowServer(tmp_path / "mlflow", extra_args=extra).start()
    try:
        _token_session(server.url, server.url.replace("http", "ws"), page="/trackbridge/")
    finally:
        server.stop()
    _assert_no_token((tmp_path / "mlflow" / "server.log").read_text())
