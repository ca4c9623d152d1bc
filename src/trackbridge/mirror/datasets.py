"""The datasets of a run, as MLflow's ``log_inputs`` records them (DESIGN §6), from what is cheap to know.

A data module is described by what it can say without loading anything:
its source name (``hparams["dataset"]``, else its class), the size of each
split it holds, and its seed. Each split becomes one MLflow dataset input
with context ``training`` / ``validation`` / ``test`` and one digest over
(source, split sizes, seed), so runs on the same data share it in MLflow.

Descriptors are plain JSON: the mirror callback collects them from the
Trainer, the cursor keeps them, and ``trackbridge sync`` sends them for a
run that never reached MLflow. No MLflow or Lightning import.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

CONTEXT_TAG = "mlflow.data.context"  # MLflow's input tag for the role of a dataset
# Attribute names data modules commonly give their splits, per MLflow context.
SPLIT_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "training": ("train_set", "train_dataset", "dataset_train", "data_train", "train_ds", "train_data"),
    "validation": ("val_set", "val_dataset", "valid_dataset", "validation_dataset", "dataset_val", "data_val",
                   "val_ds", "val_data"),
    "test": ("test_set", "test_dataset", "dataset_test", "data_test", "test_ds", "test_data"),
}


def describe_datasets(datamodule: Any = None, loaders: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Descriptors of the splits a data module holds, else of the datasets behind ``loaders`` (context → loader).

    Only splits that exist are listed; an empty list when nothing can be described.
    """
    splits: dict[str, Any] = {}
    if datamodule is not None:
        for context, names in SPLIT_ATTRIBUTES.items():
            found = next((getattr(datamodule, n) for n in names if getattr(datamodule, n, None) is not None), None)
            if found is not None:
                splits[context] = found
    for context, loader in (loaders or {}).items():
        if context not in splits:
            dataset = _dataset_of(loader)
            if dataset is not None:
                splits[context] = dataset
    if not splits:
        return []
    hparams = dict(getattr(datamodule, "hparams", None) or {})
    source = str(hparams.get("dataset") or _class_path(datamodule if datamodule is not None
                                                      else next(iter(splits.values()))))
    seed = hparams.get("seed", getattr(datamodule, "seed", None))
    sizes = {context: _size(dataset) for context, dataset in splits.items()}
    digest = hashlib.sha256(
        json.dumps({"source": source, "splits": sizes, "seed": seed}, sort_keys=True).encode()
    ).hexdigest()[:16]
    return [
        {"name": f"{source}.{context}", "context": context, "size": size, "source": source, "seed": seed,
         "splits": sizes, "digest": digest}
        for context, size in sizes.items()
    ]


def dataset_input(descriptor: Mapping[str, Any]) -> dict[str, Any]:
    """One descriptor as MLflow's ``DatasetInput`` (REST JSON shape: ``dataset`` and its ``tags``)."""
    profile = {"num_rows": descriptor.get("size"), "splits": descriptor.get("splits"), "seed": descriptor.get("seed")}
    return {
        "dataset": {
            "name": str(descriptor["name"]),
            "digest": str(descriptor["digest"]),
            "source_type": "code",
            "source": json.dumps({"name": descriptor.get("source")}),
            "profile": json.dumps(profile),
        },
        "tags": [{"key": CONTEXT_TAG, "value": str(descriptor["context"])}],
    }


def dataset_inputs(descriptors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dataset_input(d) for d in descriptors]


def _dataset_of(loader: Any) -> Any:
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    return getattr(loader, "dataset", None)


def _size(dataset: Any) -> int | None:
    try:
        return int(len(dataset))
    except (TypeError, NotImplementedError):
        return None


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
