"""Turning library errors into one-line usage errors (exit 2) that say what to do."""

from __future__ import annotations

import click


def usage_error(message: str) -> click.UsageError:
    # No ctx: click then prints just "Error: <message>", one line, and exits 2.
    return click.UsageError(message)
