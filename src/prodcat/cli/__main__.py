"""`python -m prodcat.cli ...`: the same as the `prodcat` command."""

from prodcat.cli import app

app()
