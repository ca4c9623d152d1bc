"""The dashboard page: the runs list, the run page and their assets, rendered without a web framework.

The page is a client of the live API (DESIGN §5) and nothing else: it reads
``/api/runs``, ``/api/runs/<id>``, ``/api/runs/<id>/metrics``, ``/media``,
``/system`` and the SSE stream, and POSTs stop. Three views: the runs list, a
run (charts, gallery, system panel) and the compare view
(``compare?runs=a,b``). Every URL it uses is relative, so the same page works
at ``/`` of ``trackbridge serve``, under ``/trackbridge/`` on the MLflow
server (where the API stays at ``/api``), and behind a reverse proxy that
sets ``SCRIPT_NAME``: each request computes the relative path from the page
to the API and hands it to the page in a data attribute.

:func:`create_dashboard_blueprint` keeps the page available as a Flask
blueprint of its own (the routes of the ``page`` group of the route table).
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from ..record.ids import validate_run_id
from .files import UnsafePathError, split_relative
from .http import ApiError, ApiRequest, Reply

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
ASSET_MAX_AGE_S = 300
# Runs one compare view follows (each live one holds a stream of the browser's few per host).
MAX_COMPARED = 12

# Scripts and styles from this server only: the page runs offline and no
# injected markup can load or run anything.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}


class DashboardPage:
    """Renders the page for a request; ``api_path`` is where the API is on the same host (``/api``)."""

    def __init__(self, api_path: str = "/api", page_prefix: str = "/") -> None:
        if not api_path.startswith("/"):
            raise ValueError(f"`api_path` must be an absolute path on the app such as '/api', got {api_path!r}")
        self.api_path = "/" + api_path.strip("/")
        self.page_prefix = "/" + page_prefix.strip("/")
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True, auto_reload=False
        )

    def runs_page(self, request: ApiRequest) -> Reply:
        return self._page(request, "runs", title="Runs")

    def run_page(self, request: ApiRequest) -> Reply:
        run_id = validate_run_id(request.params["run_id"])
        # The page itself checks no run: a run that does not exist yet is
        # shown as such by the API, and the page picks it up when it starts.
        return self._page(request, "run", title=run_id, run_id=run_id)

    def asset(self, request: ApiRequest) -> Reply:
        try:
            parts = split_relative(request.params["filename"])
        except UnsafePathError:
            raise ApiError(404, "no such asset") from None
        data, etag = _asset(tuple(parts))
        if data is None:
            raise ApiError(404, "no such asset")
        headers = {"Cache-Control": f"public, max-age={ASSET_MAX_AGE_S}", "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Reply(304, b"", headers, content_type="")
        return Reply(200, data, headers, content_type=_content_type(parts[-1]))

    def compare_page(self, request: ApiRequest) -> Reply:
        """The compare view of the runs named by ``?runs=a,b`` (each id validated; none: a hint to pick some)."""
        names = [name.strip() for name in request.query.get("runs", "").split(",") if name.strip()]
        run_ids = list(dict.fromkeys(validate_run_id(name) for name in names))
        if len(run_ids) > MAX_COMPARED:
            raise ApiError(400, f"at most {MAX_COMPARED} runs can be compared, got {len(run_ids)}")
        return self._page(request, "compare", title="Compare runs", run_ids=run_ids)

    def _page(
        self, request: ApiRequest, view: str, *, title: str, run_id: str | None = None, run_ids: list[str] | None = None
    ) -> Reply:
        script_root = request.root_path.rstrip("/")
        page_dir = posixpath.dirname(script_root + request.path) or "/"
        prefix = script_root + (self.page_prefix.rstrip("/") or "") + "/"
        root = relative(prefix, page_dir)
        api_base = relative(script_root + self.api_path, page_dir)
        html = self._templates.get_template("trackbridge/dashboard.html").render(
            view=view, title=title, run_id=run_id, run_ids=run_ids, root=root, api_base=api_base,
            asset=lambda filename: relative(prefix + "assets/" + filename, page_dir),
        )
        return Reply(200, html.encode("utf-8"), dict(_PAGE_HEADERS), content_type="text/html; charset=utf-8")


def relative(target: str, page_dir: str) -> str:
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


@lru_cache(maxsize=64)
def _asset(parts: tuple[str, ...]) -> tuple[bytes | None, str]:
    path = STATIC_DIR.joinpath(*parts)
    try:
        if not path.resolve().is_relative_to(STATIC_DIR) or not path.is_file():
            return None, ""
        data = path.read_bytes()
    except OSError:
        return None, ""
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _content_type(name: str) -> str:
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") or guessed.endswith("javascript") else guessed


def create_dashboard_blueprint(
    api_path: str = "/api", *, token: str | None = None, name: str = "trackbridge_dashboard"
) -> Any:
    """A Flask blueprint with the dashboard page alone; register it at any prefix.

    ``api_path`` is where the live API blueprint is mounted on the same app.
    ``token``: when set, the page and its assets need it, like every API route
    (``?token=`` once: the page then keeps it in a cookie).
    """
    DashboardPage(api_path)  # validates api_path now, as before
    from .blueprint import create_page_blueprint

    return create_page_blueprint(api_path=api_path, token=token, name=name)
