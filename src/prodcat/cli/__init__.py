"""The `prodcat` command: one module per group of commands, all sharing `common`.

`catalogue` (check, encode, encoders), `training` (train, evaluate), `prediction` (predict,
serve), `monitor` (the drift alarm), `demo`, and `desk` (queue, review ...) each register their
commands on `app` here.
Nothing in prodcat imports this package: it is the outermost layer. Each command imports the
library when it runs, so `prodcat --help` and `prodcat --version` load typer and rich only.

Help and errors are plain text (`rich_markup_mode=None`): typer's rich help shows a type for every
option, flags included (`--json <bool>`), and its rich error box wraps a message at the terminal's
width; the plain ones show flags bare and print each error on one line.
"""

from __future__ import annotations

from typing import Annotated

import typer

from prodcat import __version__
from prodcat.cli import (
    audit,
    catalogue,
    demo,
    desk,
    extend,
    labelstudio,
    monitor,
    pack,
    prediction,
    training,
)

app = typer.Typer(
    help="prodcat: put products into the categories of a taxonomy from a photo and a title.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"prodcat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """prodcat: put products into the categories of a taxonomy from a photo and a title."""


_GROUPS = (catalogue, training, prediction, monitor, demo, desk, labelstudio, audit, extend, pack)
for _group in _GROUPS:
    _group.register(app)

__all__ = ["app"]
