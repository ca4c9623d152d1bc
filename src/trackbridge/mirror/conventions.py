"""MLflow's own conventions for where a run goes and what it says about itself (DESIGN §6).

- Experiment: the config's, else ``MLFLOW_EXPERIMENT_NAME``, else
  ``MLFLOW_EXPERIMENT_ID`` (the order MLflow's fluent API uses; AzureML,
  ``mlflow run`` and many schedulers set them), else ``trackbridge``.
- Run: ``MLFLOW_RUN_ID``, or the active run of ``mlflow.start_run()``, is
  adopted instead of creating one; its lifecycle stays with whoever started it.
- Context tags (``mlflow.user``, ``mlflow.source.name``/``type``,
  ``mlflow.source.git.commit`` in a git work tree): MLflow's own run context
  providers, as ``mlflow.start_run()`` would record them.

Reading the environment happens when the run directory is created, so
``trackbridge sync`` in another shell later goes to the same place. No MLflow
import at module level: the stack calls :func:`resolve_experiment` while it
builds the run directory.
"""

from __future__ import annotations

import os
from typing import NamedTuple

DEFAULT_EXPERIMENT = "trackbridge"
EXPERIMENT_NAME_ENV = "MLFLOW_EXPERIMENT_NAME"
EXPERIMENT_ID_ENV = "MLFLOW_EXPERIMENT_ID"
RUN_ID_ENV = "MLFLOW_RUN_ID"


class ExperimentRef(NamedTuple):
    """An experiment named by name or by id (exactly one of them is set)."""

    name: str | None
    id: str | None

    def __str__(self) -> str:
        return self.name if self.name is not None else f"id {self.id}"


def resolve_experiment(configured: str | None = None) -> ExperimentRef:
    """The experiment of a new run: config, else the environment, else ``trackbridge``."""
    if configured:
        return ExperimentRef(configured, None)
    if os.environ.get(EXPERIMENT_NAME_ENV):
        return ExperimentRef(os.environ[EXPERIMENT_NAME_ENV], None)
    if os.environ.get(EXPERIMENT_ID_ENV):
        return ExperimentRef(None, os.environ[EXPERIMENT_ID_ENV])
    return ExperimentRef(DEFAULT_EXPERIMENT, None)


def run_id_to_adopt() -> str | None:
    """``MLFLOW_RUN_ID``: an MLflow run started by a launcher (``mlflow run``, a scheduler) for this process."""
    return os.environ.get(RUN_ID_ENV) or None


def active_run() -> tuple[str, str] | None:
    """``(run_id, tracking_uri)`` of the calling thread's active ``mlflow.start_run()`` run, if any.

    MLflow keeps the active run per thread: call this on the training thread.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return run.info.run_id, mlflow.get_tracking_uri()


def context_tags() -> dict[str, str]:
    """What MLflow's run context providers say about this process (user, source, git commit)."""
    from mlflow.tracking.context.registry import resolve_tags

    return {str(k): str(v) for k, v in resolve_tags().items() if v is not None}
