"""The apps: ``create_app`` (Flask, for WSGI servers and your own app) and ``create_asgi_app`` (``trackbridge serve``).

Both serve the same route table through the same :class:`~trackbridge.web.api.LiveApi`.
:func:`mount` is the one place where trackbridge's blueprints are registered
on a Flask app (this one, and the MLflow server's in its WSGI modes).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ..events.broker import EventBroker
from .api import LiveApi
from .auth import Authorizer
from .blueprint import create_blueprint, create_health_view, create_page_blueprint, to_flask
from .http import ApiError
from .settings import WebSettings


def mount(
    app: Flask,
    settings: WebSettings,
    *,
    broker: EventBroker | None = None,
    page_prefix: str = "/",
    authorizer: Authorizer | None = None,
) -> Flask:
    """Register trackbridge's blueprints on ``app``: the API at ``/api/...``, the page at ``page_prefix``.

    The single place both Flask apps (``create_app`` and the MLflow plugin in
    its WSGI modes) go through, so they serve the same routes.
    """
    live = LiveApi(settings, broker=broker, authorizer=authorizer, page_prefix=page_prefix, with_health=False)
    app.register_blueprint(create_blueprint(live=live))
    # The dashboard page, a client of the API above; it finds the API from any prefix.
    app.register_blueprint(create_page_blueprint(live), url_prefix=page_prefix if page_prefix != "/" else None)
    return app


def create_app(
    runs_root: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    cors_origins: str | tuple[str, ...] | list[str] | None = None,
    allowed_hosts: str | tuple[str, ...] | list[str] | None = None,
    tracking_uri: str | None = None,
    broker: EventBroker | None = None,
    **options: Any,
) -> Flask:
    """A Flask app serving the live API and the dashboard over ``runs_root`` (a WSGI app).

    ``runs_root``: the argument, else ``TRACKBRIDGE_RUNS_ROOT``, else ``./runs``;
    ``token``, ``cors_origins``, ``allowed_hosts``, ``tracking_uri`` likewise
    default to ``TRACKBRIDGE_TOKEN``, ``TRACKBRIDGE_CORS_ORIGINS``,
    ``TRACKBRIDGE_ALLOWED_HOSTS``, ``MLFLOW_TRACKING_URI`` (read now, not at
    import). ``options``: the other fields of
    :class:`~trackbridge.web.settings.WebSettings` (``heartbeat_s``, ...).
    ``broker``: :func:`~trackbridge.events.default_broker` when the app runs
    inside the training process.
    """
    settings = WebSettings.resolve(
        runs_root, token=token, cors_origins=cors_origins, allowed_hosts=allowed_hosts,
        tracking_uri=tracking_uri, **options,
    )
    app = Flask("trackbridge")
    app.config["TRACKBRIDGE_SETTINGS"] = settings
    mount(app, settings, broker=broker, page_prefix="/")
    live = live_api_of(app)
    app.add_url_rule("/health", "health", create_health_view(live), methods=["GET"])
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # bodies of other routes too

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Outside the blueprint (unknown paths, a bad method on /health): JSON too.
        return to_flask(live.finish(ApiError(exc.code or 400, exc.description or exc.name).reply(), _request()))

    return app


def create_asgi_app(settings: WebSettings, *, broker: EventBroker | None = None, authorizer: Authorizer | None = None) -> Any:
    """The ASGI app of ``trackbridge serve``: the API, the streams, the WebSocket and the page at ``/``."""
    from .asgi import AsgiApp

    return AsgiApp(LiveApi(settings, broker=broker, authorizer=authorizer))


def live_api_of(app: Flask) -> LiveApi:
    """The LiveApi a Flask app's trackbridge blueprint serves."""
    for extension in app.extensions.values():
        if isinstance(extension, LiveApi):
            return extension
    raise LookupError("no trackbridge blueprint is registered on this app")


def end_streams(app: Any) -> None:
    """End every open stream and WebSocket of ``app`` (its server is shutting down).

    A live stream ends by itself only when its run does; without this, a
    server's shutdown would wait for every watched run to finish.
    """
    for extension in list(getattr(app, "extensions", {}).values()):
        if isinstance(extension, LiveApi):
            extension.close()


def _request() -> Any:
    from .blueprint import flask_request

    return flask_request()
