"""``trackbridge train``: train a reference model of a task with the whole tracking stack."""

from __future__ import annotations

import click

from ..record.ids import InvalidRunIdError, validate_run_id
from ..record.run_dir import RunDirectory, RunExistsError, RunNotFoundError
from ..tasks import TASKS, UnknownTaskError, get_task
from .errors import usage_error
from .options import resolve_runs_root, runs_root_option


@click.command("train")
@click.option("--task", metavar="TASK", help=f"One of: {', '.join(TASKS)}.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs to train.  [default: 5]")
@click.option("--run-id", metavar="ID", help="Id of the new run (letters, digits, . _ -). [default: generated]")
@runs_root_option
@click.option(
    "--patience", type=int, default=10, show_default=True,
    help="Early-stopping patience on val_loss, in epochs; 0 turns early stopping off.",
)
@click.option("--resume", "resume_id", metavar="RUN_ID", help="Continue run RUN_ID from its last.ckpt.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data and weights.")
@click.option("--tracking-uri", metavar="URI", help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db]")
@click.option("--experiment", default=None,
              help="MLflow experiment name. [default: $MLFLOW_EXPERIMENT_NAME or $MLFLOW_EXPERIMENT_ID, else trackbridge]")
@click.option("--run-name", metavar="NAME", help="MLflow run name. [default: the run id]")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="An MLflow run tag (repeatable).")
@click.option("--description", metavar="TEXT", help="The MLflow run's description.")
@click.option("--register-model", metavar="NAME", help="Register the best checkpoint as a version of model NAME.")
@click.option("--no-mlflow", is_flag=True, help="Keep only the local record; do not mirror to MLflow.")
@click.option("--test", "run_test", is_flag=True, help="After training, evaluate on the reference test split.")
def command(
    task: str | None,
    epochs: int | None,
    run_id: str | None,
    runs_root: str | None,
    patience: int,
    resume_id: str | None,
    seed: int,
    tracking_uri: str | None,
    experiment: str | None,
    run_name: str | None,
    tags: tuple[str, ...],
    description: str | None,
    register_model: str | None,
    no_mlflow: bool,
    run_test: bool,
) -> None:
    """Train the reference model of TASK with the full trackbridge stack.

    Writes runs/<run-id>/ (run.json, metrics.json, events.jsonl, checkpoints,
    logs/training.log), mirrors the run to MLflow, and prints where it is.

    \b
    Examples:
      trackbridge train --task classification --epochs 3
      trackbridge train --task segmentation --epochs 5 --test
      trackbridge train --task regression --run-id reg-1 --patience 0
      trackbridge train --resume reg-1 --epochs 8
    """
    from ..config import TrackingConfig

    root = resolve_runs_root(runs_root)
    max_epochs = epochs
    if resume_id is not None:
        if run_id is not None and run_id != resume_id:
            raise usage_error("--resume already names the run; drop --run-id")
        task, max_epochs = _resumable(root, resume_id, task, epochs)
        run_id = resume_id
    elif task is None:
        raise usage_error(f"missing --task; choose one of: {', '.join(TASKS)}")
    try:
        get_task(task)
        if run_id is not None:
            validate_run_id(run_id)
        config = TrackingConfig(
            task=task,
            run_id=run_id,
            runs_root=root,
            early_stopping_patience=patience,
            resume=resume_id is not None,
            hyperparameters={"seed": seed, "max_epochs": max_epochs or 5},
            mlflow=not no_mlflow,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            tags=_tags(tags),
            description=description,
            register_model=register_model,
        )
    except (UnknownTaskError, InvalidRunIdError) as exc:
        raise usage_error(str(exc)) from None
    except ValueError as exc:
        raise usage_error(f"{exc} (see trackbridge train --help)") from None
    _train(config, max_epochs or 5, seed, run_test)


def _tags(pairs: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise usage_error(f"--tag wants KEY=VALUE, got {pair!r}")
        tags[key.strip()] = value
    return tags


def _resumable(root: str, run_id: str, task: str | None, epochs: int | None) -> tuple[str, int | None]:
    try:
        run = RunDirectory(root, run_id).read_run()
    except (InvalidRunIdError, RunNotFoundError) as exc:
        raise usage_error(str(exc)) from None
    if task is not None and task != run.get("task"):
        raise usage_error(f"run {run_id!r} is a {run.get('task')} run; drop --task to resume it")
    return run["task"], epochs or run.get("max_epochs")


def _train(config, max_epochs: int, seed: int, run_test: bool = False) -> None:
    import lightning.pytorch as pl

    from ..callbacks.stack import build_callbacks
    from ..reference import build_reference

    try:
        stack = build_callbacks(config)
    except (RunExistsError, RunNotFoundError) as exc:
        raise usage_error(str(exc)) from None
    run_dir = stack.run_dir
    click.echo(f"run {run_dir.run_id} ({config.task}) -> {run_dir.path}")

    pl.seed_everything(seed, verbose=False)
    module, data = build_reference(config.task, seed=seed)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=stack,
        logger=False,
        default_root_dir=run_dir.path,
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    try:
        trainer.fit(module, datamodule=data, ckpt_path=run_dir.last_ckpt if config.resume else None)
    except Exception as exc:
        run = run_dir.read_run()
        click.echo(f"run {run_dir.run_id} failed: {run.get('error') or exc}", err=True)
        click.echo(f"traceback in {run_dir.training_log}", err=True)
        raise SystemExit(1) from None
    run = run_dir.read_run()
    best = (
        f"best {run['monitor']} {run['best_score']:.4f} at epoch {run['best_epoch']}"
        if run.get("best_epoch") is not None
        else "no best epoch"
    )
    click.echo(f"run {run_dir.run_id} {run['status']}: {run.get('epochs_done')} epochs, {best}")
    if run_test and run["status"] != "completed":
        click.echo(f"  no test: the run is {run['status']}")
    elif run_test:
        # The weights fit ended with, on the held-out split: test_loss and test_<metric>.
        try:
            trainer.test(module, datamodule=data)
        except Exception as exc:
            click.echo(f"run {run_dir.run_id} test failed: {type(exc).__name__}: {exc}", err=True)
            raise SystemExit(1) from None
    click.echo(f"  files: {run_dir.path}")
    mlflow = run.get("mlflow") or {}
    if mlflow.get("url"):
        click.echo(f"  MLflow: {mlflow['url']}")
