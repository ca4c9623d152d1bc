"""Helpers for the web tests: a training subprocess, a `trackbridge serve` process, SSE and WS clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from conftest import REPO, free_port, wait_for_http

TRAINING_SCRIPT = REPO / "tests" / "web_training.py"


def start_training(
    runs_root: Path, run_id: str, *, epochs: int = 3, batches: int = 4, sleep: float = 0.05,
    tracking_uri: str | None = None, log: Path | None = None, test_after: float | None = None,
) -> subprocess.Popen:
    args = [
        sys.executable, str(TRAINING_SCRIPT), "--runs-root", str(runs_root), "--run-id", run_id,
        "--epochs", str(epochs), "--batches", str(batches), "--sleep", str(sleep),
    ]
    if test_after is not None:
        args += ["--test-after", str(test_after)]
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=_env())


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="10",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class ServeProcess:
    """A real ``trackbridge serve`` process on 127.0.0.1."""

    def __init__(self, runs_root: Path, *extra_args: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.log = log or runs_root.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trackbridge", "serve", "--port", str(self.port), "--runs-root", str(runs_root),
             *extra_args],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=_env(**(env or {})), start_new_session=True,
        )
        try:
            wait_for_http(f"{self.url}/health", timeout=60, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(self.log.read_text()[-3000:]) from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)




def run_status(runs_root: Path, run_id: str) -> str | None:
    try:
        return json.loads((runs_root / run_id / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


class SSEResult:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.received_at: list[float] = []
        self.closed_by_server = False
        self.error: BaseException | None = None


def read_sse(client: httpx.Client, url: str, headers: dict[str, str] | None = None, timeout: float = 120.0) -> SSEResult:
    """Read an SSE stream to its end; ``closed_by_server`` says the server ended it."""
    result = SSEResult()
    try:
        with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(timeout, connect=30)) as response:
            response.raise_for_status()
            event_id = None
            deadline = time.monotonic() + timeout
            for line in response.iter_lines():  # heartbeats come every 15 s at least
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} still streaming after {timeout} s")
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    assert event["id"] == event_id
                    result.events.append(event)
                    result.ids.append(event_id)
                    result.received_at.append(time.time())
        result.closed_by_server = True
    except BaseException as exc:  # recorded for the test to report; a thread must not die silently
        result.error = exc
    return result


class WebSocketRejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status


def read_ws(url: str, timeout: float = 120.0, send: dict[str, Any] | None = None,
            send_when: Callable[[dict[str, Any]], bool] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(events, other messages) of a WebSocket until the server closes it; optionally send one message.

    A small wsproto client: unlike simple-websocket's, it keeps the frames
    that arrive in the same read as the handshake's answer (a fast server
    sends a finished run's whole history, and closes, at once).
    """
    import socket as socket_module
    from urllib.parse import urlsplit

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Message, RejectConnection, Request, TextMessage

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sock = socket_module.create_connection((parts.hostname, parts.port), timeout=30)
    sock.settimeout(1.0)
    connection = WSConnection(ConnectionType.CLIENT)
    sock.sendall(connection.send(Request(host=parts.netloc, target=target)))
    events: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    text = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket_module.timeout:
                continue
            connection.receive_data(data or None)
            for event in connection.events():
                if isinstance(event, RejectConnection):
                    raise WebSocketRejected(event.status_code)
                if isinstance(event, AcceptConnection):
                    continue
                if isinstance(event, TextMessage):
                    text += event.data
                    if not event.message_finished:
                        continue
                    message, text = json.loads(text), ""
                    (events if "id" in message else others).append(message)
                    if send is not None and send_when is not None and send_when(message):
                        sock.sendall(connection.send(Message(data=json.dumps(send))))
                        send = None
                elif isinstance(event, CloseConnection):
                    try:
                        sock.sendall(connection.send(event.response()))
                    except OSError:
                        pass
                    return events, others
            if not data:
                return events, others  # the server closed the connection without a close frame
    finally:
        sock.close()
    raise TimeoutError(f"WebSocket {url} still open after {timeout} s; got {len(events)} events")


def file_events(runs_root: Path, run_id: str) -> list[dict[str, Any]]:
    path = runs_root / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_metrics(runs_root: Path, run_id: str) -> list[dict[str, Any]]:
    """metrics.json as the ``metrics`` of epoch_end events: each record without epoch and time."""
    records = json.loads((runs_root / run_id / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in r.items() if k not in ("epoch", "time")} for r in records]


# -- raw sockets: clients that lie ---------------------------------------------------------------
def raw_http(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` byte for byte; (status, headers, body) of the answer, read until the server closes."""
    import socket as socket_module

    with socket_module.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(body) < length:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def live_run(runs_root: Path, run_id: str, **fields: Any) -> Path:
    """A run recorded ``running`` by a process that is alive: this test process (same boot and pid namespace)."""
    from trackbridge.record import RunDirectory
    from trackbridge.record.liveness import ProcessIdentity

    run_dir = RunDirectory(runs_root, run_id)
    run_dir.create({"task": "regression"})
    run_dir.update_run(status="running", **{**ProcessIdentity.current().as_fields(), **fields})
    return run_dir.path


def finished_run(runs_root: Path, run_id: str, status: str = "completed") -> Path:
    """A finished run with a few events, written with the record's own API."""
    from trackbridge.events import EventEmitter, EventLog
    from trackbridge.record import RunDirectory

    run_dir = RunDirectory(runs_root, run_id)
    run_dir.create({"task": "regression"})
    run_dir.update_run(status=status)
    run_dir.write_metrics([{"epoch": 1, "val_loss": 1.5, "time": "2026-01-01T00:00:00Z"}])
    emitter = EventEmitter(EventLog(run_dir.events_jsonl), run_id)
    emitter.emit("run_started", max_epochs=1)
    emitter.emit("epoch_end", epoch=1, max_epochs=1, metrics={"val_loss": 1.5})
    emitter.emit({"completed": "training_complete", "failed": "training_failed", "stopped": "training_stopped"}[status])
    return run_dir.path


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


# -- DNS rebinding ----------------------------------------------------------------------------------
EVIL = "evil.example"


def get_raw(port: int, path: str, host: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return raw_http(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())


def post_raw(port: int, path: str, host: str, body: bytes = b"", **headers: str) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return raw_http(port, head.encode() + body)


def ws_status(port: int, path: str, host: str, origin: str | None) -> int:
    """The status a WebSocket handshake gets (101 when accepted)."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    origin_line = f"Origin: {origin}\r\n" if origin else ""
    status, _, _ = raw_http(port, (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin_line}Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode(), timeout=5)
    return status


def assert_rebinding_refused(
    port: int, root: Path, page: str, done: str = "done", live: str = "live", *, ours: bool = True
) -> None:
    """Host evil.example with a matching Origin: 403 JSON on GET, POST stop, the WebSocket and the page.

    ``ours=False``: someone answers first (MLflow's own Host check on its Flask app, in gunicorn mode):
    a 403 all the same, in MLflow's words.
    """
    origin = f"http://{EVIL}:{port}"
    host = f"{EVIL}:{port}"
    for path in ("/api/runs", f"/api/runs/{done}", f"/api/runs/{done}/metrics", f"/api/runs/{done}/media",
                 f"/api/runs/{done}/system", f"/api/training/{done}/stream", page, f"{page}runs/{done}",
                 f"{page}assets/dashboard.js", "/api/runs/nope/x"):
        status, headers, body = get_raw(port, path, host, Origin=origin)
        assert status == 403, (path, status, body[:200])
        if ours:
            assert headers["content-type"].startswith("application/json") and "not allowed" in json.loads(body)["error"]
    status, _, body = post_raw(port, f"/api/runs/{live}/stop", host, Origin=origin)
    assert status == 403, body
    assert ws_status(port, f"/api/training/{done}/ws", host, origin) == 403
    assert not (root / live / "stop-request.json").exists()
