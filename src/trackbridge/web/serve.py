"""The server of ``trackbridge serve``: the ASGI app (:mod:`.asgi`) under uvicorn, in this process.

Why asyncio and uvicorn (measured in docs/benchmarks.md): a live stream is
a coroutine and a few kilobytes, not a thread, so one process holds ten
thousand of them, and a run's new events reach all its readers in one pass
of the loop. The MLflow plugin runs the same app under MLflow's own
uvicorn: one serving model for both. What uvicorn leaves open is closed
here: :class:`GuardedHttpToolsProtocol` drops a connection whose request
head does not arrive in time (a client trickling its headers, an idle
half-open connection) or grows too large.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import uvicorn

from .api import LiveApi
from .asgi import TRANSPORT_EXTENSION, AsgiApp
from .logs import install_token_redaction

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_HEADER_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 64 * 1024
_FD_RESERVE = 256  # descriptors kept for files, the listening socket and non-stream connections

log = logging.getLogger(__name__)

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol, plus a deadline and a size limit for each request head.

        The deadline starts when the connection is made or a request begins
        and ends when its headers are complete; a keep-alive connection idle
        between requests is closed by uvicorn's own ``timeout_keep_alive``.
        """

        header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
        max_head_bytes = MAX_HEAD_BYTES

        def connection_made(self, transport: Any) -> None:
            self._head_timer: Any = None
            self._head_bytes = 0
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._arm()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            # The app's task is created, not run yet: it finds the transport in its scope, and
            # writes live events to it in one pass over a run's readers (see web/asgi.py).
            if self.scope.get("type") == "http":
                self.scope.setdefault("extensions", {})[TRANSPORT_EXTENSION] = self.transport

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()  # no 408: a client this slow is not reading either


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def stream_capacity(max_streams: int) -> int:
    """``max_streams``, lowered to what the open-files limit lets this process hold."""
    return max(1, min(max_streams, raise_open_files_limit() - _FD_RESERVE))


def serve(
    live: LiveApi,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    access_log: bool = True,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    graceful_shutdown_s: int = 3,
) -> None:
    """Serve ``live`` until SIGINT/SIGTERM, which first end every open stream."""
    protocol: Any = "auto"
    if HttpToolsProtocol is not None:
        protocol = type("TrackbridgeHttpProtocol", (GuardedHttpToolsProtocol,), {"header_timeout_s": header_timeout_s})
    config = uvicorn.Config(
        AsgiApp(live),
        host=host,
        port=port,
        http=protocol,
        ws="websockets-sansio",
        ws_max_size=64 * 1024,  # clients send {"type": "stop"}, nothing bigger
        lifespan="on",
        access_log=access_log,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=graceful_shutdown_s,
        # Connections beyond the streams (page loads, API calls, tricklers) get uvicorn's 503 past this.
        limit_concurrency=live.settings.max_streams + 1024,
        backlog=4096,
        server_header=False,
    )
    install_token_redaction()  # after uvicorn configured its loggers
    try:
        _Server(config, live).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: the shutdown is done, exit 0
        pass


class _Server(uvicorn.Server):
    """uvicorn's server, ending the open streams as soon as it is asked to exit.

    uvicorn waits for open responses before it exits, and a live stream
    completes only when its run does.
    """

    def __init__(self, config: uvicorn.Config, live: LiveApi) -> None:
        super().__init__(config)
        self.live = live

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        try:  # a signal handler runs on the loop's thread, between two of its steps
            asyncio.get_running_loop().call_soon_threadsafe(self.live.close)
        except RuntimeError:  # no loop running (yet): nothing holds a lock of ours on this thread
            self.live.close()
