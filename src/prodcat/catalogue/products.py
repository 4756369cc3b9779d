"""Load a product catalogue and check every row of it.

A catalogue is a table (CSV, TSV, JSON Lines or Parquet) with an id, some text, an image path and
an optional category path per product, or a folder tree ``root/<level>/<level>/<id>.jpg`` with the
text in ``<id>.txt`` beside each photo. Loading never stops at a bad row: each row is either
accepted as a `Product` or rejected with a `Problem` whose message names the file, the line, the
column and what was expected, so a person can fix the source in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prodcat.taxonomy.tree import Taxonomy

# Problem kinds; every `Problem.kind` is one of these.
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
EMPTY_TEXT = "empty_text"
NO_IMAGE = "no_image"
NO_CONTENT = "no_content"
DUPLICATE_ID = "duplicate_id"
MISSING_ID = "missing_id"
BAD_LABEL = "bad_label"
MALFORMED_ROW = "malformed_row"
LEAF_UNDER_SEVERAL_PARENTS = "leaf_under_several_parents"
PROBLEM_KINDS = (
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
    EMPTY_TEXT,
    NO_IMAGE,
    NO_CONTENT,
    DUPLICATE_ID,
    MISSING_ID,
    BAD_LABEL,
    MALFORMED_ROW,
    LEAF_UNDER_SEVERAL_PARENTS,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
DEFAULT_LABEL_COLUMN = "category"


class CatalogueError(ValueError):
    """The catalogue as a whole cannot be read: no such file, unknown format, missing columns."""


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a table hold what.

    Several `text_columns` (title, description...) are joined with ". ", skipping empty ones.
    `label_columns` (one column per taxonomy level) takes precedence over `label_column` (one
    "A > B > C" path per row). Image paths are relative to the table's folder, or absolute.
    """

    id_column: str = "id"
    text_columns: tuple[str, ...] = ("title",)
    image_column: str | None = "image"
    label_column: str | None = DEFAULT_LABEL_COLUMN
    label_columns: tuple[str, ...] | None = None
    separator: str = ">"

    def __post_init__(self) -> None:
        # Accept lists (as a CLI gives them) but store tuples so the mapping stays hashable.
        object.__setattr__(self, "text_columns", _as_names(self.text_columns, "text_columns"))
        if self.label_columns is not None:
            labels = _as_names(self.label_columns, "label_columns")
            if not labels:
                raise ValueError("label_columns must name at least one column, or be None")
            object.__setattr__(self, "label_columns", labels)
        if not self.id_column:
            raise ValueError("id_column must name a column")
        if not self.separator:
            raise ValueError("separator must be a non-empty string, e.g. '>'")

    @property
    def label_names(self) -> tuple[str, ...]:
        """The column(s) that hold the category: `label_columns`, else `label_column`, else ()."""
        if self.label_columns is not None:
            return self.label_columns
        return (self.label_column,) if self.label_column else ()


def _as_names(names: Iterable[str] | str, what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{what} must be a sequence of column names, not the string {names!r}")
    out = tuple(names)
    if any(not isinstance(name, str) or not name for name in out):
        raise ValueError(f"{what} must contain non-empty column names, got {out!r}")
    return out


@dataclass(frozen=True)
class Product:
    """One accepted catalogue row."""

    id: str
    text: str
    image: Path | None
    label: tuple[str, ...] | None
    image_sha256: str | None
    row: int


@dataclass(frozen=True)
class Problem:
    """Something wrong with one row (or, for `leaf_under_several_parents`, with the labels)."""

    kind: str
    message: str
    source: str
    row: int | None
    id: str | None
    column: str | None
    severity: Literal["error", "warning"]


@dataclass
class Catalogue:
    """The accepted products of a catalogue and every problem found while loading it."""

    source: Path
    products: list[Product] = field(repr=False)
    problems: list[Problem] = field(default_factory=list, repr=False)

    @property
    def rejected(self) -> list[Problem]:
        """The errors; each is one rejected row."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def labelled(self) -> bool:
        return bool(self.products) and all(p.label is not None for p in self.products)

    def taxonomy(self) -> Taxonomy:
        """The category tree of the accepted products' labels."""
        if not self.labelled:
            raise ValueError(f"{self.source.name} has no category labels, so it has no taxonomy")
        return Taxonomy.from_paths(p.label for p in self.products if p.label is not None)

    def by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products)

    def __repr__(self) -> str:
        return (
            f"Catalogue(source={str(self.source)!r}, n_products={len(self.products)}, "
            f"n_rejected={len(self.rejected)}, n_warnings={len(self.warnings)})"
        )
