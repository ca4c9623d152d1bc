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
    tracking_uri: str | None = None, log: Path | None = None,
) -> subprocess.Popen:
    args = [
        sys.executable, str(TRAINING_SCRIPT), "--runs-root", str(runs_root), "--run-id", run_id,
        "--epochs", str(epochs), "--batches", str(batches), "--sleep", str(sleep),
    ]
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
