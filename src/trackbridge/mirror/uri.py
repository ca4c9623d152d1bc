"""Where a run is mirrored: the tracking URI, the embedded default, and the MLflow UI link.

No MLflow import here: the web layer builds UI links with these functions.
"""

from __future__ import annotations

import os
from pathlib import Path

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
UI_URL_ENV = "TRACKBRIDGE_MLFLOW_UI_URL"
# The address `mlflow ui` and `mlflow server` listen on by default.
DEFAULT_UI_URL = "http://127.0.0.1:5000"
EMBEDDED_DIR = "mlruns"
EMBEDDED_DB = "mlflow.db"


def default_tracking_uri(cwd: str | os.PathLike[str] | None = None) -> str:
    """``sqlite:///<cwd>/mlruns/mlflow.db``: the embedded store (absolute, so a chdir cannot move it)."""
    root = Path(cwd or os.getcwd()).absolute() / EMBEDDED_DIR
    return f"sqlite:///{root / EMBEDDED_DB}"


def resolve_tracking_uri(configured: str | None = None, cwd: str | os.PathLike[str] | None = None) -> str:
    """``configured``, else ``$MLFLOW_TRACKING_URI``, else the embedded default; read when called."""
    return configured or os.environ.get(TRACKING_URI_ENV) or default_tracking_uri(cwd)


def embedded_root(tracking_uri: str) -> Path | None:
    """The ``mlruns/`` folder when ``tracking_uri`` is the embedded default layout, else None.

    The embedded store keeps its artifacts next to the database, under
    ``mlruns/artifacts/``, so the whole MLflow side of a project is one folder.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    db = Path(tracking_uri[len(prefix):])
    if db.name == EMBEDDED_DB and db.parent.name == EMBEDDED_DIR and db.is_absolute():
        return db.parent
    return None


def is_http_uri(tracking_uri: str | None) -> bool:
    return bool(tracking_uri) and tracking_uri.split(":", 1)[0].lower() in ("http", "https")


def mlflow_ui_base(tracking_uri: str | None) -> str:
    """The MLflow UI that shows runs of ``tracking_uri``.

    A tracking server serves its own UI; for a database or file store the UI
    is whatever ``$TRACKBRIDGE_MLFLOW_UI_URL`` names, else the address
    ``mlflow ui`` uses by default.
    """
    if is_http_uri(tracking_uri):
        return tracking_uri.rstrip("/")  # type: ignore[union-attr]
    return (os.environ.get(UI_URL_ENV) or DEFAULT_UI_URL).rstrip("/")


def mlflow_ui_url(tracking_uri: str | None, experiment_id: str, run_id: str) -> str:
    """``<base>/#/experiments/<experiment_id>/runs/<run_id>``: the page of one MLflow run."""
    return f"{mlflow_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"
