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

- ``--gunicorn-opts "--worker-class gthread --threads 256"``: SSE and WebSocket,
  one thread per stream. The recommended mode for the live API.
- uvicorn (the default): SSE works through MLflow's WSGI bridge, but each
  stream holds one of the bridge's worker threads (anyio's default pool of 40
  per process, shared with MLflow's own REST calls); WebSockets are refused
  by MLflow's bridge before they reach Flask.
- ``--waitress-opts``: SSE only, each stream holding one of waitress's threads
  (4 by default); no WebSocket (waitress gives no raw socket).
- plain ``--gunicorn-opts ""`` (sync workers): one request per worker at a
  time — a single stream blocks a worker. Don't.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from .app import mount
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

        return create_fastapi_app(app)
    return app


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
