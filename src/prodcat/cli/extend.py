"""`prodcat extend`: new categories from a few examples (or a name alone), without retraining.

EXAMPLES is a catalogue (read with the usual column-mapping flags) or the desk's labels CSV
(`prodcat review export`: id,category,...), whose products are then looked up in --catalogue.
The model itself is in `prodcat.model.extending`; docs/extend.md says how it works.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prodcat.cli import common
from prodcat.cli.common import (
    CacheDir,
    IdColumn,
    ImageColumn,
    LabelColumn,
    LabelColumns,
    ModelDir,
    Separator,
    TextColumns,
)

if TYPE_CHECKING:
    from prodcat.catalogue import ColumnMapping, Problem, Product
    from prodcat.model.extending import ExtendResult

# The desk's labels CSV (prodcat.desk.exchange.LABEL_COLUMNS; tests/test_extend_cli.py checks).
LABEL_EXPORT_COLUMNS = (
    "id",
    "category",
    "reviewer",
    "time",
    "model_suggestion",
    "agreed",
    "new_category",
)


def extend_cmd(
    model_dir: ModelDir,
    examples: Annotated[
        Path | None,
        typer.Argument(
            metavar="EXAMPLES",
            help="Labelled examples: a catalogue, or a labels CSV from prodcat review export "
            "(with --catalogue).",
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="Where to save the extended model.")
    ] = Path("model-extended"),
    category: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            metavar="PATH",
            help="A category known by its name alone, 'A > B > C' (zero-shot: suggested, never "
            "accepted); repeat for several.",
        ),
    ] = None,
    catalogue: Annotated[
        Path | None,
        typer.Option(
            metavar="CATALOGUE",
            help="Where the products of a labels CSV are (their photos and titles).",
        ),
    ] = None,
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Add categories to a trained model from a few labelled examples, in seconds.

    Categories the model lacks become new classes; examples of its own classes strengthen them.
    A new class is suggested at once but never accepted automatically until its own evidence
    certifies the target accuracy. The next prodcat train with the same examples folds them in
    as ordinary classes."""
    from prodcat.features.cache import FeatureCache
    from prodcat.model.extending import ExtendError, extend_model, save_extended

    if examples is None and not category:
        common.fail("nothing to add: give an EXAMPLES file, or --category 'A > B > C'")
    mapping = common.column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    model = common.load_model_or_exit(model_dir)
    products = [] if examples is None else _examples(examples, catalogue, mapping)
    try:
        result = extend_model(
            model, products, categories=category or [], cache=FeatureCache(cache_dir)
        )
    except ExtendError as exc:
        common.fail(str(exc))
    except ValueError as exc:  # a category path with an empty level, say
        common.fail(f"--category: {exc}")
    save_extended(result.model, model_dir, out_dir)
    _print_result(result)
    common.out.print(f"model: {out_dir}")


def _examples(path: Path, catalogue: Path | None, mapping: ColumnMapping) -> list[Product]:
    """The labelled examples: a labels CSV joined to --catalogue, or a catalogue."""
    if _is_label_export(path):
        if catalogue is None:
            common.fail(
                f"{path} is a labels CSV (id,category,...): it has no photos or titles; pass "
                "--catalogue with the products it labels"
            )
        return _labelled_from(path, catalogue, mapping)
    if catalogue is not None:
        common.fail(f"--catalogue is for a labels CSV; {path} is a catalogue already")
    cat = common.load_catalogue_or_exit(path, mapping, require_labels=True)
    _warn_rejected(cat.rejected)
    return [p for p in cat.products if p.label]


def _is_label_export(path: Path) -> bool:
    """A CSV whose header is the desk's export's (id, category and its other columns only)."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    names = {h.strip() for h in header}
    return {"id", "category"} <= names <= set(LABEL_EXPORT_COLUMNS)


def _labelled_from(path: Path, catalogue: Path, mapping: ColumnMapping) -> list[Product]:
    from dataclasses import replace

    from prodcat.catalogue.extra_labels import read_labels_csv

    try:
        extra = read_labels_csv(path)
    except (OSError, ValueError) as exc:
        common.fail(str(exc))
    for line in extra.problems[:20]:
        common.warn(line)
    cat = common.load_catalogue_or_exit(catalogue, mapping, require_labels=False)
    _warn_rejected(cat.rejected)
    by_id = {p.id: p for p in cat.products}
    unknown = sorted(set(extra.labels) - set(by_id))
    if unknown:
        common.warn(
            ", ".join(unknown[:10]),
            f"{len(unknown):,} labelled ids are not in {catalogue}, left out:",
        )
    return [replace(by_id[i], label=label) for i, label in extra.labels.items() if i in by_id]


def _warn_rejected(rejected: Sequence[Problem]) -> None:
    for problem in rejected[:20]:
        common.warn(problem.message, f"row {problem.row}:")


def _print_result(result: ExtendResult) -> None:
    shown = ", ".join(f"{c} ({n})" for c, n in sorted(result.examples.items())) or "none"
    common.out.print(f"examples used: {shown}")
    common.out.print(f"new classes: {', '.join(result.added) or 'none'}")
    if result.zero_shot:
        common.out.print(f"zero-shot (suggested, never accepted): {', '.join(result.zero_shot)}")
    for name, counts in result.evidence.items():
        threshold = counts["accept_threshold"]
        rule = "never accepted yet" if threshold is None else f"accepted from {threshold:.3f}"
        common.out.print(
            f"  {name}: {counts['examples']} examples; its evidence: {counts['right']} of "
            f"{counts['predicted']} predicted right: {rule}"
        )
    for pid, why in list(result.left_out.items())[:20]:
        common.warn(why, f"example {pid} left out:")
    common.out.print(f"extended in {result.seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("extend", short_help="Add categories to a model from a few examples.")(extend_cmd)
