"""The ``trackbridge`` command line: one module per command, registered on :data:`main`."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="trackbridge")
def main() -> None:
    """Track PyTorch Lightning runs: local record, MLflow mirror, live HTTP stream.

    \b
    Quick start:
      trackbridge train --task classification --epochs 3
      trackbridge runs
    """


def _register() -> None:
    from . import demo, register, runs, serve, sync, train

    for module in (train, runs, serve, demo, sync, register):
        main.add_command(module.command)


_register()
