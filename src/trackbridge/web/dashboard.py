"""The dashboard page: a Flask blueprint that serves the runs list, the run page and their assets.

The page is a client of the live API (DESIGN §5) and nothing else: it reads
``/api/runs``, ``/api/runs/<id>``, ``/api/runs/<id>/metrics`` and the SSE
stream, and POSTs stop. Every URL it uses is relative, so the same page works
at ``/`` of ``trackbridge serve``, under ``/trackbridge/`` on the MLflow
server (where the API stays at ``/api``), and behind a reverse proxy that
sets ``SCRIPT_NAME``. The blueprint computes, for each request, the relative
path from the page to the API and hands it to the page in a data attribute.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import urlencode

from flask import Blueprint, Response, render_template, request, send_from_directory, url_for

from ..record.ids import InvalidRunIdError, validate_run_id
from .auth import CHALLENGE, token_ok
from .blueprint import error_response

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# Scripts and styles from this server only: the page runs offline and no
# injected markup can load or run anything.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


def create_dashboard_blueprint(
    api_path: str = "/api",
    *,
    token: str | None = None,
    name: str = "trackbridge_dashboard",
) -> Blueprint:
    """A blueprint with the dashboard page; register it at any prefix.

    ``api_path`` is where the live API blueprint is mounted on the same app
    (``/api`` both on ``trackbridge serve`` and on the MLflow server).
    ``token``: when set, the page and its assets need ``?token=`` (or an
    ``Authorization: Bearer`` header), like every API route; the page then
    passes the token on to the API.
    """
    if not api_path.startswith("/"):
        raise ValueError(f"`api_path` must be an absolute path on the app such as '/api', got {api_path!r}")
    api_path = "/" + api_path.strip("/")
    bp = Blueprint(name, __name__, template_folder=str(TEMPLATE_DIR))

    @bp.before_request
    def _check_token() -> Response | None:
        if token_ok(request.headers, request.args, token):
            return None
        return error_response(401, "missing or wrong token: open the page as ...?token=<TRACKBRIDGE_TOKEN>", CHALLENGE)

    @bp.get("/")
    def runs_page() -> Response:
        return _page("runs", title="Runs")

    @bp.get("/runs/<run_id>")
    def run_page(run_id: str) -> Response:
        try:
            validate_run_id(run_id)
        except InvalidRunIdError as exc:
            return error_response(400, str(exc))
        # The page itself checks no run: a run that does not exist yet is
        # shown as such by the API, and the page picks it up when it starts.
        return _page("run", title=run_id, run_id=run_id)

    @bp.get("/assets/<path:filename>")
    def asset(filename: str) -> Response:
        # send_from_directory refuses paths that leave STATIC_DIR (404).
        response = send_from_directory(STATIC_DIR, filename, max_age=300)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def _page(view: str, *, title: str, run_id: str | None = None) -> Response:
        page_dir = posixpath.dirname(request.script_root + request.path) or "/"
        root = _relative(url_for(f"{name}.runs_page"), page_dir)
        api_base = _relative(request.script_root + api_path, page_dir)
        token_param = request.args.get("token")

        def asset_url(filename: str) -> str:
            url = _relative(url_for(f"{name}.asset", filename=filename), page_dir)
            return f"{url}?{urlencode({'token': token_param})}" if token_param else url

        html = render_template(
            "trackbridge/dashboard.html",
            view=view,
            title=title,
            run_id=run_id,
            root=root,
            api_base=api_base,
            asset=asset_url,
        )
        response = Response(html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response

    return bp


def _relative(target: str, page_dir: str) -> str:
    """``target`` (an absolute path on this host) as a URL relative to ``page_dir``.

    The result ends with ``/`` when ``target`` does, and is never empty
    (``./`` for the page's own folder), so the browser resolves it the same
    way whatever prefix the app is mounted under.
    """
    rel = posixpath.relpath(target, page_dir)
    if target.endswith("/") and not rel.endswith("/"):
        rel += "/"
    if rel in (".", "./"):
        return "./"
    return rel if rel.startswith(".") else "./" + rel
