"""Register a run's best.ckpt in the MLflow Model Registry, and move the alias only for a better model.

The version is an MLflow PyTorch model in pickle format, so
``mlflow.pytorch.load_model("models:/NAME@ALIAS")`` gives back the
LightningModule class with the best weights (MLflow's default ``pt2`` format
would load a GraphModule). The raw best.ckpt is stored in the same model
folder (``extra_files/best.ckpt``). ``models:/NAME@latest`` needs no alias of
ours: MLflow reserves that name and resolves it to the newest version.

MLflow is imported inside the functions: the web layer imports this module to
catch :class:`RegistrationError` without paying for MLflow at startup. This
module registers and nothing else: syncing a run first is
:func:`trackbridge.mirror.sync.register_run`'s job.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from ..mlflow_tags import MAX_TAG_VALUE_LENGTH
from ..record.jsonio import read_json
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from ..tasks import is_better
from .cursor import cursor_of

log = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "model"
INPUT_EXAMPLE = "input_example.npy"  # a few inputs of the first validation batch, written by the training side

# Model version tags (the list): where the version comes from and how good it is.
TAG_MLFLOW_RUN_ID = "mlflow_run_id"
TAG_RUN_ID = "trackbridge.run_id"
TAG_EPOCH = "best_epoch"
TAG_MONITOR = "monitor"
TAG_MODE = "mode"
TAG_SCORE = "score"
TAG_TASK = "task"
TAG_CLASS_NAMES = "class_names"
TAG_TEST_METRIC = "test_metric"
TAG_TEST_SCORE = "test_score"


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


def register_checkpoint(writer: Any, name: str, alias: str = "champion", module_class: type | None = None) -> dict[str, Any]:
    """Register the best.ckpt of ``writer``'s run as a new version of ``name``, attached to its MLflow run.

    ``writer`` is the run's connected :class:`~.writer.RunWriter`: the model
    folder is uploaded through it. The version is tagged with where it comes
    from and how good it is (the test score too when a test stage ran), and
    carries a signature and an input example inferred from
    ``input_example.npy`` when the run has one. The alias moves to the new
    version only when its score beats the current holder's under the run's
    mode (or no version holds it yet).
    """
    import mlflow.pytorch

    _quiet_pickle_warning()
    run_dir: RunDirectory = writer.run_dir
    mlflow_run_id = writer.run_id
    run = run_dir.read_run()
    check_registrable(run, run_dir, alias)
    module_class = module_class or recorded_class(run, run_dir)
    module = module_class.load_from_checkpoint(run_dir.best_ckpt, map_location="cpu")
    module.eval()
    example, signature = model_signature(module, run_dir.path / INPUT_EXAMPLE)
    class_names = _class_names(module)

    with tempfile.TemporaryDirectory(prefix="trackbridge-model-") as tmp:
        path = Path(tmp) / MODEL_ARTIFACT_PATH
        mlflow.pytorch.save_model(
            module,
            str(path),
            serialization_format="pickle",
            pip_requirements=pip_requirements(module_class),
            extra_files=[str(run_dir.best_ckpt)],
            signature=signature,
            input_example=example,
            metadata={"task": run.get("task"), "monitor": run.get("monitor"), "mode": run.get("mode"),
                      "class_names": class_names, "trackbridge_run_id": run_dir.run_id},
        )
        writer.upload_dir(path, MODEL_ARTIFACT_PATH)

    backend = writer.backend
    backend.create_registered_model(name)
    score = run.get("best_score")
    mode = run.get("mode") or "max"
    tags = {
        TAG_MLFLOW_RUN_ID: mlflow_run_id,
        TAG_RUN_ID: run_dir.run_id,
        TAG_EPOCH: str(run.get("best_epoch")),
        TAG_MONITOR: str(run.get("monitor")),
        TAG_MODE: mode,
        TAG_SCORE: repr(float(score)) if score is not None else "",
        TAG_TASK: str(run.get("task")),
        **stage_score_tags(run_dir, run.get("monitor")),
    }
    if class_names:
        tags[TAG_CLASS_NAMES] = json.dumps(class_names)[:MAX_TAG_VALUE_LENGTH]
    source = f"runs:/{mlflow_run_id}/{MODEL_ARTIFACT_PATH}"
    version = backend.create_model_version(name, source, mlflow_run_id, tags)

    holder = backend.get_alias_version(name, alias)
    moved = holder is None or _beats(score, holder.tags.get(TAG_SCORE), mode)
    if moved:
        backend.set_alias(name, alias, version.version)
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
        "signature": signature is not None,
    }


def model_signature(module: Any, example_path: Path) -> tuple[Any, Any]:
    """``(input example, signature)`` from the run's ``input_example.npy`` and the module's output on it.

    ``(None, None)`` without an example; the signature of the inputs alone
    when the output is not an array or a mapping of arrays.
    """
    if not example_path.is_file():
        return None, None
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    example = np.load(example_path, allow_pickle=False)
    try:
        with torch.no_grad():
            output = module(torch.from_numpy(example))
    except Exception as exc:  # a module whose forward wants more than the batch's first element
        log.warning("signature of %s: forward on input_example.npy failed (%s); inputs only",
                    type(module).__name__, exc)
        return example, infer_signature(example)
    return example, infer_signature(example, _as_numpy(output))


def _as_numpy(output: Any) -> Any:
    if hasattr(output, "detach"):
        return output.detach().cpu().numpy()
    if isinstance(output, dict) and all(hasattr(v, "detach") for v in output.values()):
        return {str(k): v.detach().cpu().numpy() for k, v in output.items()}
    return None


def _class_names(module: Any) -> list[str] | None:
    names = getattr(module, "class_names", None)
    if names is None:
        return None
    try:
        return [str(n) for n in names]
    except TypeError:
        return None


def stage_score_tags(run_dir: RunDirectory, monitor: str | None) -> dict[str, str]:
    """The last test stage's score: the test counterpart of the monitor (``val_x`` → ``test_x``), else its first metric."""
    try:
        stages = read_json(run_dir.metrics_json).get("stages") or []
    except (FileNotFoundError, ValueError):
        return {}
    tests = [s for s in stages if isinstance(s, dict) and s.get("stage") == "test" and s.get("metrics")]
    if not tests:
        return {}
    metrics = tests[-1]["metrics"]
    wanted = "test_" + monitor[len("val_"):] if monitor and monitor.startswith("val_") else None
    name = wanted if wanted in metrics else next(iter(metrics))
    value = metrics[name]
    return {TAG_TEST_METRIC: name, TAG_TEST_SCORE: "" if value is None else repr(float(value))}


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
