"""Options shared by several commands."""

from __future__ import annotations

import click

runs_root_option = click.option(
    "--runs-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder that holds the run directories. [default: $TRACKBRIDGE_RUNS_ROOT or ./runs]",
)


def resolve_runs_root(value: str | None) -> str:
    """``--runs-root``, else ``TRACKBRIDGE_RUNS_ROOT``, else ``runs``."""
    import os

    return value or os.environ.get("TRACKBRIDGE_RUNS_ROOT") or "runs"
