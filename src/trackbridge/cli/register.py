"""``trackbridge register``: a finished run's best.ckpt → a new version in the MLflow Model Registry."""

from __future__ import annotations

import click

from ..record.ids import InvalidRunIdError
from ..record.run_dir import RunDirectory, RunNotFoundError
from .errors import usage_error
from .options import resolve_runs_root, runs_root_option


@click.command("register")
@click.argument("run_id")
@click.option("--name", required=True, metavar="NAME", help="Registered model name (created if new).")
@click.option("--alias", default="champion", show_default=True,
              help="Alias to move to the new version if it beats the current holder.")
@runs_root_option
@click.option("--tracking-uri", metavar="URI",
              help="MLflow to register in. [default: the run's, in run.json (resolved when it was created)]")
def command(run_id: str, name: str, alias: str, runs_root: str | None, tracking_uri: str | None) -> None:
    """Register the best checkpoint of completed run RUN_ID as a new version of model NAME.

    The version loads with mlflow.pytorch.load_model("models:/NAME@ALIAS") as
    the run's LightningModule with its best weights; the raw best.ckpt is kept
    beside it. ALIAS moves only when the run's score beats the current
    holder's (under the task's mode); models:/NAME@latest is always the newest.

    \b
    Example:
      trackbridge register reg-1 --name digits --alias champion
    """
    from ..mirror.client import MLFLOW_ERRORS
    from ..mirror.registry import RegistrationError
    from ..mirror.sync import register_run

    root = resolve_runs_root(runs_root)
    try:
        run_dir = RunDirectory(root, run_id)
        run = run_dir.read_run()
    except (InvalidRunIdError, RunNotFoundError) as exc:
        raise usage_error(str(exc)) from None
    try:
        result = register_run(run_dir, name, alias, tracking_uri, module_class=_module_class(run))
    except RegistrationError as exc:
        raise usage_error(str(exc)) from None
    except MLFLOW_ERRORS as exc:
        click.echo(f"run {run_id}: MLflow failed, not registered: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"registered {result['name']} version {result['version']} ({result['model_uri']})")
    if result["alias_moved"]:
        score = "no score" if result["score"] is None else f"{result['monitor']} {result['score']:.4g}"
        click.echo(f"  @{alias} -> version {result['version']} ({score})")
    else:
        click.echo(
            f"  @{alias} stays on version {result['alias_version']}: it scores better "
            f"on {result['monitor']} ({result['mode']})"
        )


def _module_class(run: dict) -> type | None:
    """For a run never mirrored (so no class on record), the reference model of its task."""
    if (run.get("mlflow") or {}).get("module_class") or run.get("status") != "completed":
        return None
    from ..reference import REFERENCE_TASKS, build_reference

    if run.get("task") not in REFERENCE_TASKS:
        return None
    module, _ = build_reference(run["task"])
    return type(module)
