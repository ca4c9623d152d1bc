"""``mlflow server --app-name trackbridge``: the live API on the MLflow tracking server's own port.

Modelled on MLflow's basic-auth plugin (``mlflow/server/auth/__init__.py``):
``create_app(app)`` receives MLflow's Flask app, mounts trackbridge's
blueprints on it (the routes keep their ``/api/...`` paths; the page goes
under ``/trackbridge/``) and returns it — wrapped in MLflow's FastAPI app
when ``mlflow server`` runs uvicorn, its default.

``mlflow server`` passes no options to a plugin, so it is configured by the
environment: ``TRACKBRIDGE_RUNS_ROOT`` (default ``./runs``),
``TRACKBRIDGE_TOKEN``, ``TRACKBRIDGE_CORS_ORIGINS``, and
``MLFLOW_TRACKING_URI`` for the runs it cannot read from disk (default: this
server's own backend store).

Which of MLflow's server modes carry what (see the README):

- uvicorn (the default): SSE and WebSocket, served natively on MLflow's
  FastAPI app (:mod:`.asgi`): a stream costs a coroutine, not a thread.
  Through MLflow's WSGI bridge alone, a stream would hold one of the bridge's
  40 threads per process (shared with MLflow's REST API) until its run ends,
  and WebSockets would be refused.
- ``--gunicorn-opts "--worker-class gthread --threads 256"``: SSE and
  WebSocket through the Flask blueprint, one thread per open stream.
- ``--waitress-opts``: MLflow 3.17 cannot start any ``--app-name`` plugin this
  way outside Windows (it passes both ``create_app()`` and ``--call`` to
  waitress, which refuses). Loaded by waitress directly, the plugin serves SSE,
  each stream holding one of waitress's threads (4 by default), and answers a
  WebSocket with 501 (waitress gives no raw socket).
- ``--gunicorn-opts ""`` (sync workers): one request per worker at a time;
  a single open stream blocks a whole worker. Don't.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from flask import Flask

from .app import end_streams, mount
from .blueprint import API_BLUEPRINT
from .settings import WebSettings

PAGE_PREFIX = "/trackbridge"


def create_app(app: Flask | None = None) -> Any:
    """Mount trackbridge on MLflow's Flask ``app`` (default: ``mlflow.server.app``) and return it."""
    if app is None:
        from mlflow.server import app
    settings = WebSettings.resolve(tracking_uri=_server_tracking_uri())
    mount(app, settings, page_prefix=PAGE_PREFIX)
    if _server_kind() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        from .asgi import install

        asgi_app = create_fastapi_app(app)
        # The stream and the WebSocket natively on uvicorn: no bridge thread per stream.
        install(asgi_app, app.extensions[API_BLUEPRINT])
        _end_streams_on_exit_signals(app)
        return asgi_app
    return app


def _end_streams_on_exit_signals(app: Flask) -> None:
    """Make Ctrl-C / SIGTERM end the open streams before uvicorn waits for them.

    uvicorn's shutdown waits for every open response to complete, and a live
    stream completes only when its run does: ``mlflow server`` would hang on
    Ctrl-C while a dashboard is open. uvicorn loads this app inside its own
    signal handling, so the handlers found here are uvicorn's: each is chained
    after ending the streams (in a thread, since a signal handler must not
    take the locks the interrupted code may hold).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            threading.Thread(target=end_streams, args=(app,), name="trackbridge-end-streams", daemon=True).start()
            previous(number, frame)

        signal.signal(signum, handler)


def _server_tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI``, else the backend store ``mlflow server`` hands its workers."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR

    return os.environ.get(BACKEND_STORE_URI_ENV_VAR) or None


def _server_kind() -> str | None:
    """``uvicorn``, ``gunicorn`` or ``waitress``: what ``mlflow server`` launched us under."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    return _MLFLOW_SGI_NAME.get()
