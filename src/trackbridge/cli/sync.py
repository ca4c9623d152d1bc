"""``trackbridge sync``: replay what MLflow lacks of finished runs, idempotently."""

from __future__ import annotations

import click

from ..events.lifecycle import mark_dead_runs
from ..record.ids import InvalidRunIdError
from ..record.liveness import iter_runs
from ..record.run_dir import RunDirectory, RunNotFoundError
from .errors import usage_error
from .options import resolve_runs_root, runs_root_option

URI_SOURCES = {"--tracking-uri": "--tracking-uri", "run.json": "from run.json", "default": "default"}


@click.command("sync")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--all", "all_runs", is_flag=True, help="Sync every finished run of the runs root.")
@runs_root_option
@click.option(
    "--tracking-uri", metavar="URI",
    help="MLflow to sync to. [default: the run's, in run.json (resolved when it was created)]",
)
@click.option("--verify", is_flag=True,
              help="Compare with MLflow's full history of every metric instead of trusting run.json's cursor.")
def command(run_ids: tuple[str, ...], all_runs: bool, runs_root: str | None, tracking_uri: str | None,
            verify: bool) -> None:
    """Send MLflow what it lacks of finished runs: points, images, params, artifacts, status.

    Safe to repeat: run.json's cursor says exactly what reached MLflow, so
    only the rest is sent and a second sync adds nothing (--verify reads
    MLflow's histories instead). A run MLflow never saw is created there.
    Runs still training are skipped (their live mirror sends them). Exits 1
    when MLflow refuses or cannot be reached, with its message.

    \b
    Examples:
      trackbridge sync reg-1
      trackbridge sync --all --tracking-uri http://127.0.0.1:5000
    """
    from ..mirror.errors import MirrorFailure
    from ..mirror.sync import SyncError, SyncJob, describe

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
            job = SyncJob(run_dir, tracking_uri, verify=verify)
        except SyncError as exc:
            click.echo(f"skipped: {exc}", err=True)
            failed += not all_runs  # with --all, a live run is simply not due yet
            continue
        click.echo(f"run {run_dir.run_id}: syncing to {job.tracking_uri} ({URI_SOURCES[job.result.uri_source]})",
                   err=True)
        try:
            steps = job.plan()
            with click.progressbar(length=len(steps), label=f"sync {run_dir.run_id}",
                                   file=click.get_text_stream("stderr")) as bar:
                job.run(advance=bar.update)
        except MirrorFailure as failure:
            failed += 1
            said = "refused" if failure.refused else "failed"
            click.echo(f"run {run_dir.run_id}: MLflow at {job.tracking_uri} {said}: {failure}; "
                       "what was delivered is recorded, run sync again to send the rest", err=True)
            continue
        click.echo(describe([job.result])[0])
    if failed:
        raise SystemExit(1)


def _existing(root: str, run_id: str) -> RunDirectory:
    run_dir = RunDirectory(root, run_id)
    run_dir.read_run()  # raises RunNotFoundError with the way out
    return run_dir
