"""Register a run's best.ckpt in the MLflow Model Registry, and move the alias only for a better model.

The version is an MLflow PyTorch model in pickle format, so
``mlflow.pytorch.load_model("models:/NAME@ALIAS")`` gives back the
LightningModule class with the best weights (MLflow's default ``pt2`` format
would load a GraphModule). The raw best.ckpt is stored in the same model
folder (``extra_files/best.ckpt``). ``models:/NAME@latest`` needs no alias of
ours: MLflow reserves that name and resolves it to the newest version.

MLflow is imported inside the functions: the web layer imports this module to
catch :class:`RegistrationError` without paying for MLflow at startup.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from ..tasks import is_better
from .cursor import cursor_of

MODEL_ARTIFACT_PATH = "model"

# Model version tags (the list): where the version comes from and how good it is.
TAG_MLFLOW_RUN_ID = "mlflow_run_id"
TAG_RUN_ID = "trackbridge.run_id"
TAG_EPOCH = "best_epoch"
TAG_MONITOR = "monitor"
TAG_MODE = "mode"
TAG_SCORE = "score"


class RegistrationError(ValueError):
    """The run cannot be registered (not completed, no best.ckpt, unknown module class)."""


def check_registrable(run: dict[str, Any], run_dir: RunDirectory, alias: str = "champion") -> None:
    """Raise :class:`RegistrationError` unless the run completed, has a best.ckpt, and ``alias`` is ours to set."""
    if alias.lower() == "latest":
        raise RegistrationError("'latest' is reserved by MLflow (models:/NAME@latest is always the newest version)")
    status = run.get("status")
    if status != RunStatus.COMPLETED.value:
        raise RegistrationError(
            f"run {run_dir.run_id!r} is {status}; only a completed run can be registered"
        )
    if not run_dir.best_ckpt.is_file():
        raise RegistrationError(f"run {run_dir.run_id!r} has no best checkpoint ({run_dir.best_ckpt})")


def import_class(dotted: str) -> type:
    """``package.module.ClassName`` → the class."""
    module_name, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistrationError(f"cannot import the LightningModule class {dotted!r}: {exc}") from None


def recorded_class(run: dict[str, Any], run_dir: RunDirectory) -> type:
    """The LightningModule class the mirror recorded for the run (what best.ckpt loads into)."""
    dotted = cursor_of(run).get("module_class")
    if not dotted:
        raise RegistrationError(
            f"run {run_dir.run_id!r} does not record its LightningModule class "
            "(it was never mirrored); pass module_class= to register it"
        )
    return import_class(dotted)


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def pip_requirements(module_class: type) -> list[str]:
    """The packages the pickled module needs, pinned to what runs here.

    Given explicitly, so MLflow does not infer them (which loads the model in
    a subprocess and takes about ten seconds).
    """
    names = ["torch", "lightning", "torchmetrics", "mlflow", "cloudpickle"]
    top = module_class.__module__.split(".")[0]
    if top not in names:
        names.append(top)
    requirements = []
    for name in names:
        try:
            requirements.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue  # a module from a plain folder: nothing pip could install
    return requirements


def register_checkpoint(
    client: Any,
    run_dir: RunDirectory,
    mlflow_run_id: str,
    name: str,
    alias: str = "champion",
    *,
    module_class: type | None = None,
) -> dict[str, Any]:
    """Register ``run_dir``'s best.ckpt as a new version of ``name``, attached to ``mlflow_run_id``.

    The alias moves to the new version only when its score beats the
    current holder's under the run's mode (or no version holds it yet).
    """
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    _quiet_pickle_warning()
    run = run_dir.read_run()
    check_registrable(run, run_dir, alias)
    module_class = module_class or recorded_class(run, run_dir)
    module = module_class.load_from_checkpoint(run_dir.best_ckpt, map_location="cpu")
    module.eval()

    with tempfile.TemporaryDirectory(prefix="trackbridge-model-") as tmp:
        path = Path(tmp) / MODEL_ARTIFACT_PATH
        mlflow.pytorch.save_model(
            module,
            str(path),
            serialization_format="pickle",
            pip_requirements=pip_requirements(module_class),
            extra_files=[str(run_dir.best_ckpt)],
        )
        client.log_artifacts(mlflow_run_id, str(path), MODEL_ARTIFACT_PATH)

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    score = run.get("best_score")
    mode = run.get("mode") or "max"
    tags = {
        TAG_MLFLOW_RUN_ID: mlflow_run_id,
        TAG_RUN_ID: run_dir.run_id,
        TAG_EPOCH: str(run.get("best_epoch")),
        TAG_MONITOR: str(run.get("monitor")),
        TAG_MODE: mode,
        TAG_SCORE: repr(float(score)) if score is not None else "",
    }
    source = f"runs:/{mlflow_run_id}/{MODEL_ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=mlflow_run_id, tags=tags)

    holder_version = client.get_registered_model(name).aliases.get(alias)
    holder = client.get_model_version(name, holder_version) if holder_version is not None else None
    moved = holder is None or _beats(score, holder.tags.get(TAG_SCORE), mode)
    if moved:
        client.set_registered_model_alias(name, alias, version.version)
    return {
        "name": name,
        "version": int(version.version),
        "alias": alias,
        "alias_moved": moved,
        "alias_version": int(version.version) if moved else int(holder.version),
        "model_uri": f"models:/{name}/{version.version}",
        "alias_uri": f"models:/{name}@{alias}",
        "mlflow_run_id": mlflow_run_id,
        "score": score,
        "monitor": run.get("monitor"),
        "mode": mode,
    }


def registration_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What run.json's cursor keeps of a registration."""
    return {key: result[key] for key in ("name", "version", "alias", "alias_moved", "model_uri")}


class _DropPickleAdvice(logging.Filter):
    """MLflow advises pt2 on every pickle save; pickle is the point here (the class comes back)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


_PICKLE_FILTER = _DropPickleAdvice()


def _quiet_pickle_warning() -> None:
    logger = logging.getLogger("mlflow.pytorch")
    if _PICKLE_FILTER not in logger.filters:
        logger.addFilter(_PICKLE_FILTER)


def _beats(score: float | None, holder_score: str | None, mode: str) -> bool:
    if score is None or not math.isfinite(score):
        return False
    try:
        incumbent = float(holder_score) if holder_score else None
    except ValueError:
        incumbent = None
    return is_better(score, incumbent, mode)


def register_run(
    run_dir: RunDirectory,
    name: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
    *,
    module_class: type | None = None,
) -> dict[str, Any]:
    """Register a finished run's best.ckpt as a new version of model ``name``.

    Returns ``{"name", "version", "alias", "alias_moved", "model_uri", ...}``.
    Raises :class:`RegistrationError` when the run is not completed, has no
    best.ckpt, or its LightningModule class is unknown. The run is first
    synced (created in MLflow if it never was), so the version links to an
    MLflow run that holds the same record.
    """
    from .sync import SyncJob

    run = run_dir.read_run()
    check_registrable(run, run_dir, alias)
    module_class = module_class or recorded_class(run, run_dir)
    job = SyncJob(run_dir, tracking_uri)
    job.run()
    result = register_checkpoint(job.client, run_dir, job.mlflow_run_id, name, alias, module_class=module_class)
    job.cursor.update(registered=registration_summary(result))
    return result
