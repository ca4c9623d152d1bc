"""Talking to MLflow: a client with bounded HTTP retries, error classes, the experiment and the run.

MLflow 3.17 reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``_TIMEOUT`` and
``_BACKOFF_FACTOR`` from ``os.environ`` on every request and has no
per-client setting (``RestStore`` passes none to ``http_request``). Its
defaults (7 retries, backoff factor 2, 120 s timeout) keep one call to a dead
server busy for about four minutes. :func:`bound_http_retries` sets tighter
values in the process, each only if the user has not set it: the mirror's
worker does its own retrying with backoff, so one MLflow call should fail fast
and say so.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import mlflow
import requests
import sqlalchemy.exc
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..mlflow_tags import RUN_ID_TAG
from .uri import embedded_root

log = logging.getLogger(__name__)

# Values for one MLflow HTTP request made by trackbridge (see the module docstring).
HTTP_LIMITS: Mapping[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # set_terminated would GET the run first, only to print its link; trackbridge prints it itself
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

# What "MLflow is unavailable or refused" looks like from the client: its own
# exception (REST errors and wrapped connection errors), requests' errors from
# artifact transfers, OS errors (refused connections, a full disk under a
# local artifact store) and SQLAlchemy errors of an embedded sqlite store.
MLFLOW_ERRORS: tuple[type[BaseException], ...] = (
    MlflowException,
    requests.RequestException,
    OSError,
    sqlalchemy.exc.SQLAlchemyError,
)

# 4xx answers that mean "this request will never succeed", unlike 408 and 429.
_RETRYABLE_4XX = frozenset({408, 429})


def bound_http_retries() -> dict[str, str]:
    """Set :data:`HTTP_LIMITS` in ``os.environ`` where the user has not; returns what was set."""
    applied = {}
    for name, value in HTTP_LIMITS.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied


def is_rejection(exc: BaseException) -> bool:
    """Whether MLflow answered and refused the request (a bad key, a deleted run): retrying won't help."""
    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status not in _RETRYABLE_4XX


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.get_http_status_code() == 404


def make_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient for ``tracking_uri`` (registry on the same URI), retries bounded."""
    bound_http_retries()
    root = embedded_root(tracking_uri)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (or restored, if deleted) when needed.

    In the embedded layout the experiment's artifacts go under
    ``mlruns/artifacts/``, next to the database, not MLflow's ``./mlruns``
    relative to whatever the working directory is later.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = embedded_root(tracking_uri)
    location = None
    if root is not None:
        location = (root / "artifacts" / _slug(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        # Another process created it between our lookup and our create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise exc
        return experiment.experiment_id


def find_run(client: MlflowClient, run_id: str | None, experiment_id: str, local_run_id: str) -> Run | None:
    """The MLflow run of a local run: by its MLflow id first, else by the ``trackbridge.run_id`` tag."""
    if run_id:
        try:
            run = client.get_run(run_id)
            if run.info.lifecycle_stage != "deleted":
                return run
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_ID_TAG}` = '{local_run_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return found[0] if found else None


def create_run(
    client: MlflowClient, experiment_id: str, local_run_id: str, start_ms: int | None, tags: Mapping[str, str]
) -> Run:
    """A new MLflow run named after the local run, tagged to link back to it."""
    return client.create_run(experiment_id, start_time=start_ms, tags=dict(tags), run_name=local_run_id)


def mlflow_version() -> str:
    return mlflow.__version__


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "experiment"

