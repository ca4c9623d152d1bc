"""A loopback reverse proxy in front of a real ``mlflow server`` that a test can make misbehave, on cue.

    with FaultProxy(server.url) as proxy:
        proxy.fail(403, only="runs/log-batch", code="PERMISSION_DENIED")   # refuse log-batch, pass the rest
        proxy.fail(429, retry_after=2)                                     # rate limit everything
        proxy.fail(500)                                                    # an internal error
        proxy.delay(20.0)                                                  # answer, but 20 s late
        proxy.heal()                                                       # forward everything again

Answers are MLflow's own JSON error shape (``error_code``, ``message``), so
the client sees what a real server (or a gateway in front of one) would
send. ``proxy.seen`` counts requests per (method, path, answered status).
Runs in a thread of the test process; binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from delay_proxy import forward  # noqa: E402  (the bench's loopback proxy forwards the same way)


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer this instead of forwarding
    only: str | None = None  # ... to paths containing this (None: every path)
    code: str = "INTERNAL_ERROR"
    message: str = "injected by the test's fault proxy"
    retry_after: float | None = None
    delay_s: float = 0.0  # wait this long, then forward

    def applies(self, path: str) -> bool:
        return self.only is None or self.only in path


class FaultProxy:
    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fault: Fault | None = None
        self.seen: Counter[tuple[str, str, int]] = Counter()
        self.log: list[tuple[float, str, str, int]] = []  # (time.monotonic(), method, path, status) of each answer
        self.in_flight = 0  # requests being delayed or forwarded right now
        self._lock = threading.Lock()
        self._release = threading.Event()  # set by heal(): delayed requests go on at once
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the test says ------------------------------------------------------
    def fail(self, status: int, *, only: str | None = None, code: str | None = None,
             message: str | None = None, retry_after: float | None = None) -> None:
        default_code = {403: "PERMISSION_DENIED", 429: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"}
        self.fault = Fault(status=status, only=only, code=code or default_code.get(status, "INTERNAL_ERROR"),
                           message=message or f"injected {status} by the test's fault proxy",
                           retry_after=retry_after)

    def delay(self, seconds: float, *, only: str | None = None) -> None:
        self.fault = Fault(delay_s=seconds, only=only)

    def heal(self) -> None:
        """Forward everything again, the requests being delayed right now included (the network is back)."""
        self.fault = None
        release, self._release = self._release, threading.Event()
        release.set()

    def count(self, path_part: str, status: int | None = None) -> int:
        with self._lock:
            return sum(n for (_, path, answered), n in self.seen.items()
                       if path_part in path and (status is None or answered == status))

    # -- serving -----------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                with proxy._lock:
                    proxy.seen[(self.command, self.path.split("?")[0], status)] += 1
                    proxy.log.append((time.monotonic(), self.command, self.path.split("?")[0], status))

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.in_flight += 1
                try:
                    self._handle_one()
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.fault
                if fault is not None and fault.applies(self.path):
                    if fault.status is not None:
                        payload = json.dumps({"error_code": fault.code, "message": fault.message}).encode()
                        headers = {"Content-Type": "application/json"}
                        if fault.retry_after is not None:
                            headers["Retry-After"] = f"{fault.retry_after:g}"
                        self._answer(fault.status, payload, headers)
                        return
                    proxy._release.wait(fault.delay_s)
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                answer = forward(local, proxy.upstream, self.command, self.path, self.headers, body)
                if answer is None:
                    self._answer(502, b'{"error_code": "BAD_GATEWAY", "message": "upstream unreachable"}',
                                 {"Content-Type": "application/json"})
                    return
                status, _, headers, payload = answer
                self._answer(status, payload, dict(headers))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler
