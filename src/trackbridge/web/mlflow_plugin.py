"""The live API on the MLflow tracking server's own port: two ``mlflow.app`` plugins.

- ``mlflow server --app-name trackbridge``: MLflow's app plus the live API
  and the dashboard (at ``/trackbridge/``), guarded like ``trackbridge serve``
  (Host allow-list, ``TRACKBRIDGE_TOKEN``, no cross-site control).
- ``mlflow server --app-name trackbridge-auth``: MLflow's basic-auth app
  (``mlflow.server.auth``, as ``--app-name basic-auth``) with the live API
  mounted and authorized by MLflow's own users and experiment permissions
  (:mod:`.mlflow_auth`). MLflow's UI and REST API keep their auth unchanged.

Modelled on MLflow's basic-auth plugin: the factory receives MLflow's Flask
app and returns what ``mlflow server`` should serve. Under uvicorn (MLflow's
default) that is trackbridge's ASGI app (:mod:`.asgi`) in front of MLflow's
FastAPI app: the same serving model as ``trackbridge serve`` — a stream costs
a coroutine, not one of the WSGI bridge's 40 threads — and every request that
is not the API's goes to MLflow untouched. Under gunicorn or waitress, the
Flask blueprint is mounted on MLflow's Flask app instead (a thread per stream).

``mlflow server`` passes no options to a plugin, so it is configured by the
environment: ``TRACKBRIDGE_RUNS_ROOT`` (default ``./runs``),
``TRACKBRIDGE_TOKEN`` (``trackbridge`` only), ``TRACKBRIDGE_ALLOWED_HOSTS``
(else MLflow's own ``--allowed-hosts`` / ``MLFLOW_SERVER_ALLOWED_HOSTS``),
``TRACKBRIDGE_CORS_ORIGINS``, ``TRACKBRIDGE_MAX_STREAMS``, and
``MLFLOW_TRACKING_URI`` for the runs it cannot read from disk (default: this
server's own backend store). Either plugin redacts ``token=`` from the
access logs of the server it runs in.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any

from flask import Flask

from .api import LiveApi
from .app import mount
from .auth import Authorizer
from .logs import install_token_redaction
from .settings import ALLOWED_HOSTS_ENV, WebSettings

PAGE_PREFIX = "/trackbridge"
MLFLOW_ALLOWED_HOSTS_ENV = "MLFLOW_SERVER_ALLOWED_HOSTS"


def create_app(app: Flask | None = None) -> Any:
    """``--app-name trackbridge``: MLflow's ``app`` (default ``mlflow.server.app``) with the live API."""
    if app is None:
        from mlflow.server import app
    return _serve_with(app, settings(), authorizer=None)


def create_auth_app(app: Flask | None = None) -> Any:
    """``--app-name trackbridge-auth``: MLflow's basic-auth app with the live API, authorized by MLflow users."""
    if app is None:
        from mlflow.server import app
    from mlflow.server.auth import create_app as create_basic_auth_app

    from .mlflow_auth import MlflowAuthorizer

    host_app = create_basic_auth_app(app)  # MLflow's users, its auth routes and its permission checks
    # The token does not apply here: MLflow's users are who may see runs.
    return _serve_with(app, settings(use_token=False), authorizer=MlflowAuthorizer(), host_app=host_app)


def settings(*, use_token: bool = True) -> WebSettings:
    """The plugin's settings, from the environment (``mlflow server`` passes none of ours)."""
    hosts = os.environ.get(ALLOWED_HOSTS_ENV) or os.environ.get(MLFLOW_ALLOWED_HOSTS_ENV) or ""
    resolved = WebSettings.resolve(tracking_uri=_server_tracking_uri(), allowed_hosts=hosts)
    return resolved if use_token else dataclasses.replace(resolved, token=None)


def _serve_with(flask_app: Flask, live_settings: WebSettings, *, authorizer: Authorizer | None, host_app: Any = None) -> Any:
    install_token_redaction()
    if _server_kind() == "uvicorn":
        from .asgi import AsgiApp

        if host_app is None:
            from mlflow.server.fastapi_app import create_fastapi_app

            host_app = create_fastapi_app(flask_app)
        live = LiveApi(live_settings, authorizer=authorizer, page_prefix=PAGE_PREFIX, with_health=False)
        _end_streams_on_exit_signals(live)
        return AsgiApp(live, fallback=host_app)
    mount(flask_app, live_settings, page_prefix=PAGE_PREFIX, authorizer=authorizer)
    return host_app if host_app is not None else flask_app


def _end_streams_on_exit_signals(live: LiveApi) -> None:
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
            threading.Thread(target=live.close, name="trackbridge-end-streams", daemon=True).start()
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
