"""Usage errors that print one line that says what to do, and exit 2."""

from __future__ import annotations

from typing import IO, Any

import click


class OneLineUsageError(click.UsageError):
    """A ``click.UsageError`` shown as the single line ``Error: <message>``.

    Click prints the usage and a help hint above a usage error; for errors in
    the values (an unknown task, a taken run id) the message itself already
    says what to do, and one line is easier to read and to grep.
    """

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file or click.get_text_stream("stderr"), err=True)


def usage_error(message: str) -> click.UsageError:
    return OneLineUsageError(message)
