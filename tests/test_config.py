"""TrackingConfig and the task table: validation with messages that list the choices."""

from __future__ import annotations

import dataclasses

import pytest

from trackbridge import TASKS, TrackingConfig, UnknownTaskError, get_task
from conftest import DESIGN_TASKS



@pytest.mark.parametrize("task,expected", DESIGN_TASKS.items())
def test_tasks_table_matches_the_design(task, expected):
    spec = get_task(task)
    assert (spec.monitor, spec.mode) == expected
    config = TrackingConfig(task=task)
    assert (config.resolved_monitor, config.resolved_mode) == expected


def test_tasks_table_has_exactly_seven_tasks():
    assert list(TASKS) == list(DESIGN_TASKS)


def test_get_task_unknown_lists_the_seven():
    with pytest.raises(UnknownTaskError) as info:
        get_task("detection")
    for name in DESIGN_TASKS:
        assert name in str(info.value)


def test_config_defaults():
    config = TrackingConfig(task="regression")
    assert config.run_id is None and str(config.runs_root) == "runs"
    assert config.early_stopping_patience == 10
    # issue 10: None means MLFLOW_EXPERIMENT_NAME / _ID, else "trackbridge", resolved when the run is created
    assert config.experiment is None and config.register_alias == "champion"
    assert config.run_name is None and dict(config.tags) == {} and config.description is None
    assert config.mirror_checkpoints == "best_last" and config.flush_timeout_s == 30


def test_config_is_frozen_including_its_hyperparameters():
    config = TrackingConfig(task="regression", hyperparameters={"lr": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.task = "classification"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.hyperparameters["lr"] = 1.0  # type: ignore[index]
    assert config.to_dict()["hyperparameters"] == {"lr": 0.1}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"task": "nope"}, "choose one of"),
        ({"task": "regression", "run_id": "../x"}, "invalid run id"),
        ({"task": "regression", "early_stopping_patience": -1}, "must be 0 \\(off\\)"),
        ({"task": "regression", "mode": "up"}, "`mode` can be min, max"),
        ({"task": "regression", "mirror_checkpoints": "all"}, "best_last, none"),
        ({"task": "regression", "resume": True}, "needs the `run_id`"),
        ({"task": "regression", "heartbeat_interval_s": 60}, "heartbeat_interval_s"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrackingConfig(**kwargs)


def test_config_monitor_override():
    config = TrackingConfig(task="classification", monitor="val_loss", mode="min")
    assert (config.resolved_monitor, config.resolved_mode) == ("val_loss", "min")
