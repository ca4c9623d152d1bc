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
- ``--waitress-opts``: SSE only, each stream holding one of waitress's
  threads (4 by default); no WebSocket (waitress gives no raw socket: 501).
- ``--gunicorn-opts ""`` (sync workers): one request per worker at a time;
  a single open stream blocks a whole worker. Don't.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from .app import mount
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
        return asgi_app
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
