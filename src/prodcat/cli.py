"""The `prodcat` command: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prodcat import __version__
from prodcat.cache import FeatureCache
from prodcat.catalogue import (
    Catalogue,
    CatalogueError,
    ColumnMapping,
    format_summary,
    load_catalogue,
    summarise,
)
from prodcat.encoders.registry import get_encoder, list_encoders
from prodcat.features import encode_products
from prodcat.split import split_catalogue

app = typer.Typer(
    help="prodcat: put products into the categories of a taxonomy from a photo and a title.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

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


def _mapping(
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


def _load(path: Path, mapping: ColumnMapping, *, quiet: bool = False) -> Catalogue:
    try:
        return load_catalogue(path, mapping, progress=not quiet)
    except CatalogueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def check(
    catalogue: Annotated[Path, typer.Argument(help="CSV / TSV / JSONL / Parquet file or folder.")],
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a catalogue row by row and summarise it; exit 1 when rows were rejected."""
    mapping = _mapping(id_column, text_column, image_column, label_column, label_columns, separator)
    cat = _load(catalogue, mapping, quiet=as_json)
    summary = summarise(cat)
    summary["split"] = {name: len(part) for name, part in split_catalogue(cat.products).items()}
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        out.print(format_summary(summary))
    if cat.rejected:
        raise typer.Exit(1)


@app.command()
def encode(
    catalogue: Annotated[Path, typer.Argument(help="CSV / TSV / JSONL / Parquet file or folder.")],
    image_encoder: Annotated[str, typer.Option(help="Image encoder name.")] = "effnet-lite0",
    text_encoder: Annotated[str, typer.Option(help="Text encoder name.")] = "minilm",
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Encode every product's photo and title into the feature cache."""
    mapping = _mapping(id_column, text_column, image_column, label_column, label_columns, separator)
    cat = _load(catalogue, mapping)
    _encode_report(cat, [image_encoder, text_encoder], FeatureCache(cache_dir))


def _encode_report(cat: Catalogue, encoder_names: list[str], cache: FeatureCache) -> None:
    table = Table(title="features", title_justify="left")
    columns = ("encoder", "dim", "products", "distinct", "computed", "from cache", "errors", "s")
    for column in columns:
        table.add_column(column, justify="left" if column == "encoder" else "right")
    for name in encoder_names:
        encoder = get_encoder(name)
        start = time.perf_counter()
        feats = encode_products(cat.products, encoder, cache)
        seconds = time.perf_counter() - start
        table.add_row(
            name,
            str(encoder.dim),
            f"{len(feats.ids):,}",
            f"{feats.n_computed + feats.n_cached:,}",
            f"{feats.n_computed:,}",
            f"{feats.n_cached:,}",
            f"{len(feats.errors):,}",
            f"{seconds:.1f}",
        )
        for pid, reason in list(feats.errors.items())[:10]:
            err.print(f"[yellow]product {pid}:[/yellow] {reason}")
    out.print(table)
    out.print(f"cache: {cache.root}")


@app.command("encoders")
def encoders_cmd() -> None:
    """List the registered encoders."""
    table = Table("name", "modality", "description")
    for info in list_encoders():
        table.add_row(info.name, info.modality, info.description)
    out.print(table)


def sample_catalogue() -> Path:
    """The real sample catalogue shipped with the package."""
    return Path(str(resources.files("prodcat") / "data" / "sample" / "products.csv"))


@app.command()
def demo(cache_dir: CacheDir = None) -> None:
    """Run prodcat on the bundled sample: check the catalogue, split it, encode it."""
    path = sample_catalogue()
    out.rule(f"prodcat {__version__} demo: the bundled sample catalogue")
    out.print(f"catalogue: {path}")
    cat = _load(path, ColumnMapping())
    summary = summarise(cat)
    summary["split"] = {name: len(part) for name, part in split_catalogue(cat.products).items()}
    out.print(format_summary(summary))
    out.rule("encoding photos and titles (cached: a second run is instant)")
    _encode_report(cat, ["effnet-lite0", "minilm"], FeatureCache(cache_dir))
    out.rule("next")
    out.print(
        "- check your own catalogue:  prodcat check products.csv --label-columns a,b,c\n"
        "- encode it:                 prodcat encode products.csv\n"
        "- available encoders:        prodcat encoders\n"
        "- the catalogue format and the code map: README.md"
    )


if __name__ == "__main__":
    app()
