"""TrackingConfig: the one frozen object that describes how a run is tracked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .record.ids import validate_run_id
from .record.liveness import default_stale_after_s
from .tasks import MODES, TaskSpec, get_task

MIRROR_CHECKPOINTS = ("best_last", "none")


@dataclass(frozen=True)
class TrackingConfig:
    """How one training run is recorded, mirrored and streamed.

    Only ``task`` is required. ``monitor`` and ``mode`` default to the task's
    row of the table in DESIGN §3. ``tracking_uri`` is resolved when the run
    starts (config, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite
    store under ``mlruns/``), never at import time.
    """

    task: str
    run_id: str | None = None
    runs_root: str | os.PathLike[str] = "runs"
    early_stopping_patience: int = 10
    monitor: str | None = None
    mode: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = False
    # MLflow mirror (DESIGN §6)
    mlflow: bool = True
    tracking_uri: str | None = None
    # None: $MLFLOW_EXPERIMENT_NAME, else $MLFLOW_EXPERIMENT_ID, else "trackbridge" (read when the run is created)
    experiment: str | None = None
    run_name: str | None = None  # the MLflow run's name; None: the run id
    tags: Mapping[str, str] = field(default_factory=dict)  # extra MLflow run tags
    description: str | None = None  # the MLflow run's description (mlflow.note.content)
    register_model: str | None = None
    register_alias: str = "champion"
    mirror_checkpoints: str = "best_last"
    flush_timeout_s: float = 30.0
    # Live progress and liveness (DESIGN §2)
    progress_interval_s: float = 1.0
    heartbeat_interval_s: float = 15.0
    stale_after_s: float | None = None  # None: $TRACKBRIDGE_STALE_AFTER_S, else 120
    # System metrics (system.jsonl, MLflow system/...): seconds between samples, 0 turns them off
    system_metrics_interval_s: float = 10.0
    # Media (issue 12): task figures every n validation epochs (0 = none), budgets
    media_every_n_epochs: int = 1
    media_samples: int = 8
    media_max_side: int = 1024
    media_max_bytes: int = 200 * 2**20

    def __post_init__(self) -> None:
        spec = get_task(self.task)
        if self.run_id is not None:
            validate_run_id(self.run_id)
        if isinstance(self.early_stopping_patience, bool) or not isinstance(
            self.early_stopping_patience, int
        ):
            raise ValueError(
                f"`early_stopping_patience` must be an integer, got {self.early_stopping_patience!r}"
            )
        if self.early_stopping_patience < 0:
            raise ValueError(
                "`early_stopping_patience` must be 0 (off) or a positive number of epochs, "
                f"got {self.early_stopping_patience}"
            )
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"`mode` can be {', '.join(MODES)}, got {self.mode!r}")
        if self.mirror_checkpoints not in MIRROR_CHECKPOINTS:
            raise ValueError(
                f"`mirror_checkpoints` can be {', '.join(MIRROR_CHECKPOINTS)}, "
                f"got {self.mirror_checkpoints!r}"
            )
        if self.flush_timeout_s < 0:
            raise ValueError(f"`flush_timeout_s` must be >= 0, got {self.flush_timeout_s}")
        if self.progress_interval_s <= 0:
            raise ValueError(f"`progress_interval_s` must be > 0, got {self.progress_interval_s}")
        if not 0 < self.heartbeat_interval_s <= 30:
            # a reader on another host calls a run dead after stale_after_s without a beat
            raise ValueError(f"`heartbeat_interval_s` must be in (0, 30], got {self.heartbeat_interval_s}")
        if self.stale_after_s is None:
            object.__setattr__(self, "stale_after_s", default_stale_after_s())
        elif not self.stale_after_s > 0:
            raise ValueError(f"`stale_after_s` must be > 0 seconds, got {self.stale_after_s}")
        if self.system_metrics_interval_s < 0:
            raise ValueError(
                f"`system_metrics_interval_s` must be >= 0 (0 turns system metrics off), got {self.system_metrics_interval_s}"
            )
        _check_int(self, "media_every_n_epochs", 0, "0 (no task figures) or a positive number of epochs")
        _check_int(self, "media_samples", 1, "a positive number of validation images per grid")
        _check_int(self, "media_max_side", 64, "at least 64 pixels")
        _check_int(self, "media_max_bytes", 1, "a positive number of bytes")
        if self.resume and self.run_id is None:
            raise ValueError("`resume=True` needs the `run_id` of the run to resume")
        for key in self.tags:
            if not isinstance(key, str) or not key:
                raise ValueError(f"`tags` keys must be non-empty strings, got {key!r}")
        # Freeze the mappings too: a frozen dataclass with a mutable dict inside is not frozen.
        object.__setattr__(
            self, "hyperparameters", MappingProxyType(dict(self.hyperparameters))
        )
        object.__setattr__(self, "tags", MappingProxyType({k: str(v) for k, v in self.tags.items()}))

    def __getstate__(self) -> dict[str, Any]:
        # The frozen mapping does not pickle (ddp_spawn pickles the whole stack): travel as a dict.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["hyperparameters"] = dict(self.hyperparameters)
        state["tags"] = dict(self.tags)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "hyperparameters", MappingProxyType(dict(state.get("hyperparameters") or {})))
        object.__setattr__(self, "tags", MappingProxyType(dict(state.get("tags") or {})))

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def resolved_monitor(self) -> str:
        """The metric that picks best.ckpt: ``monitor`` or the task's default."""
        return self.monitor or self.task_spec.monitor

    @property
    def resolved_mode(self) -> str:
        return self.mode or self.task_spec.mode

    @property
    def runs_root_path(self) -> Path:
        return Path(self.runs_root)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy, with monitor and mode resolved (stored in run.json)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["runs_root"] = str(self.runs_root)
        data["hyperparameters"] = dict(self.hyperparameters)
        data["tags"] = dict(self.tags)
        data["monitor"] = self.resolved_monitor
        data["mode"] = self.resolved_mode
        return data


def _check_int(config: TrackingConfig, name: str, minimum: int, what: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"`{name}` must be an integer ({what}), got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be {what}, got {value}")
