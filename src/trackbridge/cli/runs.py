"""``trackbridge runs``: list the runs of a runs root (and close those whose process died)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..events.lifecycle import mark_dead_runs
from ..record.liveness import iter_runs
from .options import resolve_runs_root, runs_root_option

COLUMNS = ("run_id", "task", "status", "epochs", "best_epoch", "best_score")


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run.get("run_id"),
        "task": run.get("task"),
        "status": run.get("status"),
        "epochs_done": run.get("epochs_done", 0),
        "max_epochs": run.get("max_epochs"),
        "best_epoch": run.get("best_epoch"),
        "best_score": run.get("best_score"),
        "monitor": run.get("monitor"),
        "created_at": run.get("created_at"),
        "error": run.get("error"),
    }


@click.command("runs")
@runs_root_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def command(runs_root: str | None, as_json: bool) -> None:
    """List runs: id, task, status, epochs done, best epoch and score.

    Runs whose training process died without reporting (killed, out of
    memory, power loss) are marked failed first.
    """
    root = resolve_runs_root(runs_root)
    mark_dead_runs(root)
    summaries = []
    for run_dir in iter_runs(root):
        try:
            summaries.append(run_summary(run_dir.read_run()))
        except (OSError, ValueError) as exc:
            click.echo(f"warning: skipping {run_dir.path}: {exc}", err=True)
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    if not summaries:
        click.echo(f"no runs in {root}; start one with: trackbridge train --task classification")
        return
    rows = [
        (
            s["run_id"],
            s["task"] or "",
            s["status"] or "",
            f"{s['epochs_done']}/{s['max_epochs'] if s['max_epochs'] is not None else '?'}",
            "" if s["best_epoch"] is None else str(s["best_epoch"]),
            "" if s["best_score"] is None else f"{s['best_score']:.4g} ({s['monitor']})",
        )
        for s in summaries
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(COLUMNS)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
