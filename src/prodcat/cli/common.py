"""What every `prodcat` command shares: the consoles, the column-mapping flags, and loading a
catalogue or a model with a clear error instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from prodcat.catalogue import Catalogue, CatalogueError, ColumnMapping, load_catalogue

if TYPE_CHECKING:
    from prodcat.model.bundle import Model

out = Console(soft_wrap=True)  # long lines are left to the terminal: never broken mid-word
err = Console(stderr=True, soft_wrap=True)

# The column-mapping flags, shared by every command that reads a catalogue.
IdColumn = Annotated[str, typer.Option("--id-column", help="Column with the product id.")]
TextColumns = Annotated[
    list[str] | None,
    typer.Option("--text-column", help="Text column; repeat to join several (title, description)."),
]
ImageColumn = Annotated[
    str, typer.Option("--image-column", help="Column with the image path (relative to the table).")
]
LabelColumn = Annotated[
    str, typer.Option("--label-column", help="Column with the category path 'A > B > C'.")
]
LabelColumns = Annotated[
    str | None,
    typer.Option(
        "--label-columns", help="One column per level, comma-separated: masterCategory,subCategory"
    ),
]
Separator = Annotated[str, typer.Option("--separator", help="Separator of the category path.")]
CacheDir = Annotated[
    Path | None, typer.Option("--cache-dir", help="Feature cache folder (default: user cache).")
]
Modalities = Annotated[
    str | None,
    typer.Option(
        "--modalities", help="What the model may see: image,text (default), image or text."
    ),
]
Threshold = Annotated[
    float | None,
    typer.Option(
        "--threshold", help="Accept answers at least this probable (overrides the trained one)."
    ),
]


def column_mapping(
    id_column: str,
    text_columns: list[str] | None,
    image_column: str,
    label_column: str,
    label_columns: str | None,
    separator: str,
) -> ColumnMapping:
    levels = tuple(c.strip() for c in label_columns.split(",")) if label_columns else None
    return ColumnMapping(
        id_column=id_column,
        text_columns=tuple(text_columns) if text_columns else ("title",),
        image_column=image_column,
        label_column=label_column,
        label_columns=levels,
        separator=separator,
    )


def load_catalogue_or_exit(
    path: Path,
    mapping: ColumnMapping,
    *,
    quiet: bool = False,
    decoded: Callable[[str], bool] | None = None,
) -> Catalogue:
    try:
        return load_catalogue(path, mapping, progress=not quiet, decoded=decoded)
    except CatalogueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def load_model_or_exit(model_dir: Path) -> Model:
    from prodcat.model.bundle import Model, ModelError

    try:
        return Model.load(model_dir)
    except ModelError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
