"""The production server of ``trackbridge serve``: gunicorn's threaded worker, run in-process.

Why gunicorn ``gthread``: an SSE stream or a WebSocket holds one thread for
as long as the client listens, and gthread gives each request its own thread
from a pool while the worker's main loop keeps accepting and heartbeating.
flask-sock works on it (it takes the raw socket gunicorn hands to the app).
Measured (docs/benchmarks.md): one worker holds hundreds of concurrent
streams. waitress cannot carry flask-sock (no raw socket); gevent/eventlet
would need monkey-patching of the whole process; Flask's development server
is not for production. Idle threads cost little: the pool grows on demand.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Flask
from gunicorn.app.base import BaseApplication

from .app import end_streams

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_THREADS = 1024


class GunicornServer(BaseApplication):
    """Run a WSGI app built by ``app_factory`` under gunicorn with ``options`` (gunicorn settings)."""

    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.app_factory = app_factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)
        self.cfg.set("worker_exit", self.end_streams)

    def load(self) -> Flask:
        # Built in the worker, after the fork: the app's watcher threads start there.
        self.app = self.app_factory()
        return self.app

    def end_streams(self, server: Any, worker: Any) -> None:
        """gunicorn's ``worker_exit`` hook: open streams end, so the worker exits at once."""
        app = getattr(self, "app", None)
        if app is not None:
            end_streams(app)


def server_options(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, threads: int = DEFAULT_THREADS, workers: int = 1
) -> dict[str, Any]:
    """gunicorn settings for a streaming server: gthread, ``threads`` concurrent requests per worker."""
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    return {
        "bind": [address],
        "worker_class": "gthread",
        "workers": workers,
        "threads": threads,
        # open connections per worker: every streaming thread plus room for keep-alive ones
        "worker_connections": threads + 256,
        # a stream never ends on its own before its run does: don't wait for streams on shutdown
        "graceful_timeout": 3,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "trackbridge-serve",
    }


def serve(app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
    """Serve until SIGINT/SIGTERM (gunicorn's arbiter handles both)."""
    GunicornServer(app_factory, options).run()
