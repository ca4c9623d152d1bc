"""MLflow for readers outside the mirror: a bounded client, and the errors to catch around MLflow calls.

The web layer's MLflow event source reads runs with :func:`make_client`,
which answers ``get_run``, ``get_metric_history``, ``search_runs`` and
``search_experiments`` like an ``MlflowClient``, with trackbridge's bounded
HTTP requests for a tracking server (see :mod:`.backend`): a dead server
costs a request seconds, not minutes, and the process's own ``mlflow.*``
calls keep MLflow's defaults.
"""

from __future__ import annotations

from typing import Any

from .errors import MirrorFailure

# What a caller of the mirror, sync or registry catches as "MLflow is unavailable or refused".
MLFLOW_ERRORS: tuple[type[BaseException], ...] = (MirrorFailure, OSError)


def make_client(tracking_uri: str) -> Any:
    """A reader of ``tracking_uri`` with the ``MlflowClient`` read methods the web layer uses."""
    from .backend import open_backend

    return open_backend(tracking_uri)


def mlflow_version() -> str:
    import mlflow

    return mlflow.__version__
