"""`prodcat check`, `encode` and `encoders`: look at a catalogue and fill the feature cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prodcat.cli.common import (
    TRAIN_MODULES,
    CacheDir,
    Engine,
    IdColumn,
    ImageColumn,
    LabelColumn,
    LabelColumns,
    RayAddress,
    Separator,
    TextColumns,
    Workers,
    column_mapping,
    fail,
    load_catalogue_or_exit,
    out,
    require_extra,
    warn,
)

if TYPE_CHECKING:
    from rich.table import Table

    from prodcat.catalogue import Catalogue, ColumnMapping
    from prodcat.features.cache import FeatureCache

CatalogueArg = Annotated[
    Path,
    typer.Argument(metavar="CATALOGUE", help="CSV / TSV / JSONL / Parquet file or folder."),
]


def check(
    catalogue: CatalogueArg,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a catalogue row by row and summarise it: classes, what a default training would
    learn and leave out, duplicates, problems. Exit 1 when rows were rejected, 2 when the
    catalogue cannot be read (or its label column looks misspelt)."""
    from prodcat.catalogue import format_summary, summarise
    from prodcat.catalogue.split import split_catalogue

    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    cat = load_catalogue_or_exit(catalogue, mapping, quiet=as_json)
    summary = summarise(cat)
    summary["split"] = {name: len(part) for name, part in split_catalogue(cat.products).items()}
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        out.print(format_summary(summary))
    if cat.rejected:
        raise typer.Exit(1)


def encode(
    catalogue: CatalogueArg,
    image_encoder: Annotated[
        str, typer.Option(metavar="NAME", help="Image encoder name.")
    ] = "effnet-lite0",
    text_encoder: Annotated[str, typer.Option(metavar="NAME", help="Text encoder name.")] = (
        "minilm"
    ),
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
    engine: Engine = "local",
    ray_address: RayAddress = None,
    workers: Workers = None,
) -> None:
    """Encode every product's photo and title into the feature cache. --engine ray encodes on a
    Ray cluster, each worker writing its own packs into the (shared) cache folder."""
    require_extra("prodcat encode", "train", TRAIN_MODULES)
    from prodcat.features.cache import FeatureCache

    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    names = [image_encoder, text_encoder]
    _check_cacheable(names)
    if engine == "ray":
        _encode_ray(catalogue, names, FeatureCache(cache_dir), mapping, ray_address, workers)
        return
    if engine != "local":
        fail(f"--engine {engine}: expected local or ray")
    if ray_address is not None or workers is not None:
        fail("--ray-address and --workers need --engine ray")
    cat = load_catalogue_or_exit(catalogue, mapping, require_labels=False)
    _encode_report(cat, names, FeatureCache(cache_dir))
    # Rows that are not products are said, as the Ray engine says them, never dropped silently.
    for problem in cat.rejected[:10]:
        warn(problem.message, "rejected:")
    out.print(f"{len(cat.rejected):,} rows rejected")


def _check_cacheable(names: list[str]) -> None:
    """Only encoders with fixed weights fill the cache: a bag of words is fitted on the
    training titles by the head that reads it, so there is nothing to compute before training."""
    from prodcat.encoders.registry import encoder_info

    for name in names:
        try:
            info = encoder_info(name)
        except ValueError as exc:
            fail(str(exc))
        if info.output == "words":
            fail(
                f"{name} is fitted on the training titles by the head that reads it (`prodcat "
                "train`); there is nothing to encode ahead. Expected an encoder with fixed "
                "weights (`prodcat encoders` lists them: e.g. minilm, effnet-lite0)"
            )


def _encode_ray(
    catalogue: Path,
    names: list[str],
    cache: FeatureCache,
    mapping: ColumnMapping,
    address: str | None,
    workers: int | None,
) -> None:
    from prodcat.catalogue import CatalogueError
    from prodcat.distributed import RayEngineError
    from prodcat.distributed.encode import encode_on_ray

    start = time.perf_counter()
    try:
        totals, plan, rejected = encode_on_ray(
            catalogue, names, cache.root, mapping, address=address, workers=workers
        )
    except (CatalogueError, RayEngineError) as exc:
        fail(str(exc))
    seconds = time.perf_counter() - start
    table = _features_table()
    for t in totals:
        counts = (t.products, t.computed + t.cached, t.computed, t.cached, len(t.errors))
        table.add_row(t.name, str(t.dim), *(f"{n:,}" for n in counts), f"{seconds:.1f}")
        for pid, reason in list(t.errors.items())[:10]:
            warn(reason, f"product {pid}:")
    for message in rejected[:10]:
        warn(message, "rejected:")
    out.print(table)
    out.print(
        f"cache: {cache.root} ({plan.workers} Ray workers of {plan.cpus} CPU each; "
        f"{len(rejected):,} rows rejected; s is the whole run)"
    )


def _features_table() -> Table:
    from rich.table import Table

    table = Table(title="features", title_justify="left")
    columns = ("encoder", "dim", "products", "distinct", "computed", "from cache", "errors", "s")
    for column in columns:
        table.add_column(column, justify="left" if column == "encoder" else "right")
    return table


def _encode_report(cat: Catalogue, encoder_names: list[str], cache: FeatureCache) -> None:
    from prodcat.encoders.registry import get_encoder
    from prodcat.features.encode import encode_products

    table = _features_table()
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
            warn(reason, f"product {pid}:")
    out.print(table)
    out.print(f"cache: {cache.root}")


def encoders() -> None:
    """List the registered encoders."""
    from rich.table import Table

    from prodcat.encoders.registry import list_encoders

    table = Table("name", "modality", "description")
    for info in list_encoders():
        table.add_row(info.name, info.modality, info.description)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("check", short_help="Check a catalogue: classes, training plan, problems.")(check)
    app.command("encode", short_help="Encode photos and titles into the feature cache.")(encode)
    app.command("encoders")(encoders)
