"""``trackbridge sync``: replay what MLflow lacks of finished runs, idempotently."""

from __future__ import annotations

import click

from ..events.lifecycle import mark_dead_runs
from ..record.ids import InvalidRunIdError
from ..record.liveness import iter_runs
from ..record.run_dir import RunDirectory, RunNotFoundError
from .errors import usage_error
from .options import resolve_runs_root, runs_root_option


@click.command("sync")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--all", "all_runs", is_flag=True, help="Sync every finished run of the runs root.")
@runs_root_option
@click.option(
    "--tracking-uri", metavar="URI",
    help="MLflow to sync to. [default: the run's MLflow, else $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db]",
)
def command(run_ids: tuple[str, ...], all_runs: bool, runs_root: str | None, tracking_uri: str | None) -> None:
    """Send MLflow what it lacks of finished runs: points, params, artifacts, status.

    Safe to repeat: MLflow's history of each metric is read first and only
    missing (key, step) points are sent, so a second sync adds nothing. A run
    MLflow never saw is created there. Runs still training are skipped (their
    live mirror sends them).

    \b
    Examples:
      trackbridge sync reg-1
      trackbridge sync --all --tracking-uri http://127.0.0.1:5000
    """
    from ..mirror.client import MLFLOW_ERRORS
    from ..mirror.sync import SyncError, SyncJob

    root = resolve_runs_root(runs_root)
    if not run_ids and not all_runs:
        raise usage_error("name the runs to sync (trackbridge sync RUN_ID ...) or pass --all")
    if run_ids and all_runs:
        raise usage_error("pass run ids or --all, not both")
    mark_dead_runs(root)
    try:
        targets = list(iter_runs(root)) if all_runs else [_existing(root, run_id) for run_id in run_ids]
    except (InvalidRunIdError, RunNotFoundError) as exc:
        raise usage_error(str(exc)) from None
    if not targets:
        click.echo(f"no runs in {root}")
        return

    failed = 0
    for run_dir in targets:
        try:
            job = SyncJob(run_dir, tracking_uri)
            with click.progressbar(job.steps, label=f"sync {run_dir.run_id}", file=click.get_text_stream("stderr")) as steps:
                for step in steps:
                    step()
        except SyncError as exc:
            click.echo(f"skipped: {exc}", err=True)
            failed += not all_runs  # with --all, a live run is simply not due yet
            continue
        except MLFLOW_ERRORS as exc:
            failed += 1
            click.echo(f"run {run_dir.run_id}: MLflow error, nothing more sent: {exc}", err=True)
            continue
        result = job.result
        if result.changed:
            parts = [f"+{result.points_added} points"]
            if result.created:
                parts.insert(0, "created in MLflow")
            if result.artifacts_uploaded:
                parts.append(f"{len(result.artifacts_uploaded)} artifacts")
            if result.status:
                parts.append(f"status {result.status}")
            if result.registered:
                parts.append(f"registered {result.registered['name']} v{result.registered['version']}")
            click.echo(f"run {run_dir.run_id}: {', '.join(parts)} -> {result.url}")
        else:
            click.echo(f"run {run_dir.run_id}: already in sync -> {result.url}")
    if failed:
        raise SystemExit(1)


def _existing(root: str, run_id: str) -> RunDirectory:
    run_dir = RunDirectory(root, run_id)
    run_dir.read_run()  # raises RunNotFoundError with the way out
    return run_dir
