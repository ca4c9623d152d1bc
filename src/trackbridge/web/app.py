"""create_app: the Flask app of ``trackbridge serve`` — the live API (and the dashboard page).

:func:`mount` is the one place where trackbridge's blueprints are registered,
on this app and on the MLflow server's app (see :mod:`.mlflow_plugin`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ..events.broker import EventBroker
from .blueprint import LiveApi, create_blueprint, error_response, json_response
from .dashboard import create_dashboard_blueprint
from .settings import WebSettings

log = logging.getLogger(__name__)


def mount(app: Flask, settings: WebSettings, *, broker: EventBroker | None = None, page_prefix: str = "/") -> Flask:
    """Register trackbridge's blueprints on ``app``: the API at ``/api/...``, the page at ``page_prefix``.

    The single place both apps (``create_app`` and the MLflow plugin) go
    through, so they serve the same routes.
    """
    app.register_blueprint(create_blueprint(settings=settings, broker=broker))
    # The dashboard page, a client of the API above; it finds the API from any prefix.
    app.register_blueprint(create_dashboard_blueprint(token=settings.token), url_prefix=page_prefix)
    return app


def create_app(
    runs_root: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    cors_origins: str | tuple[str, ...] | list[str] | None = None,
    tracking_uri: str | None = None,
    broker: EventBroker | None = None,
    **options: Any,
) -> Flask:
    """A Flask app serving the live API over ``runs_root``.

    ``runs_root``: the argument, else ``TRACKBRIDGE_RUNS_ROOT``, else ``./runs``;
    ``token``, ``cors_origins``, ``tracking_uri`` likewise default to
    ``TRACKBRIDGE_TOKEN``, ``TRACKBRIDGE_CORS_ORIGINS``, ``MLFLOW_TRACKING_URI``
    (read now, not at import). ``options``: the other fields of
    :class:`~trackbridge.web.settings.WebSettings` (``heartbeat_s``, ...).
    ``broker``: :func:`~trackbridge.events.default_broker` when the app runs
    inside the training process.
    """
    settings = WebSettings.resolve(
        runs_root, token=token, cors_origins=cors_origins, tracking_uri=tracking_uri, **options
    )
    app = Flask("trackbridge")
    app.config["TRACKBRIDGE_SETTINGS"] = settings
    mount(app, settings, broker=broker, page_prefix="/")

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Outside the blueprint (unknown paths, a bad method on /health): JSON too.
        return error_response(exc.code or 400, exc.description or exc.name)

    return app


def end_streams(app: Flask) -> None:
    """End every open stream and WebSocket of ``app`` (its server is shutting down).

    A live stream ends by itself only when its run does; without this, a
    server's shutdown would wait for every watched run to finish.
    """
    for extension in list(app.extensions.values()):
        if isinstance(extension, LiveApi):
            extension.hub.close()
