"""``python -m trackbridge`` is the ``trackbridge`` command."""

from .cli import main

main()
