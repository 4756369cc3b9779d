"""Load a product catalogue and check every row of it.

A catalogue is a table (CSV, TSV, JSON Lines or Parquet) with an id, some text, an image path and
an optional category path per product, or a folder tree ``root/<level>/<level>/<id>.jpg`` with the
text in ``<id>.txt`` beside each photo. Loading never stops at a bad row: each row is either
accepted as a `Product` or rejected with a `Problem` whose message names the file, the line, the
column and what was expected, so a person can fix the source in one pass.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from prodcat.images import ImageError, read_image
from prodcat.progress import progress_bar
from prodcat.taxonomy import CategoryPath, Taxonomy, format_path, parse_path

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
_DEFAULT_LABEL_COLUMN = "category"
# Images are decoded at <= 64 px to prove they decode; JPEG draft mode makes big photos cheap.
_VERIFY_DRAFT_SIZE = 64
# Bounded batches keep the number of pending futures (and bytes in flight) small on huge catalogues.
_IMAGE_BATCH = 1024
_MAX_COLUMNS_SHOWN = 20


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
    label_column: str | None = _DEFAULT_LABEL_COLUMN
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


# --------------------------------------------------------------------------------------------------
# Reading tables


@dataclass(frozen=True)
class _Source:
    """Where a row comes from, for messages."""

    name: str
    base_dir: Path
    unit: str | None  # "line" or "row"; None for a file of the folder layout
    # Image folders resolved so far (symlinks followed), so each is resolved once per file: a
    # resolve() per row, a stat per path component, cost 1.5 s of a 37k-product catalogue.
    folders: dict[Path, Path] = field(default_factory=dict, compare=False)

    def image_path(self, value: str) -> Path:
        if "\\" in value and "/" not in value and os.sep == "/":
            value = value.replace("\\", "/")  # a Windows-made CSV
        given = Path(value)
        path = Path(os.path.normpath(given if given.is_absolute() else self.base_dir / given))
        folder = self.folders.get(path.parent)
        if folder is None:
            folder = self.folders[path.parent] = path.parent.resolve()
        return folder / path.name

    def where(
        self, row: int | None, product_id: str | None = None, column: str | None = None
    ) -> str:
        text = self.name
        if self.unit and row:
            text += f" {self.unit} {row}"
        if product_id:
            text += f" (id {product_id})"
        if column:
            text += f", column {column!r}"
        return text

    def problem(
        self,
        kind: str,
        detail: str,
        row: int | None,
        product_id: str | None = None,
        column: str | None = None,
        severity: Literal["error", "warning"] = "error",
    ) -> Problem:
        message = f"{self.where(row, product_id, column)}: {detail}"
        return Problem(kind, message, self.name, row, product_id or None, column, severity)


@dataclass
class _Table:
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]
    problems: list[Problem] = field(default_factory=list)


def _read_delimited(path: Path, src: _Source, delimiter: str) -> _Table:
    # The csv module, not pandas: rows keep their true line numbers, quoted newlines included.
    reader: Any = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise CatalogueError(
                    f"{src.name}: the file is empty; expected a header line naming the columns"
                )
            table = _Table([name.strip() for name in header], [])
            start = reader.line_num + 1
            for fields in reader:
                row, start = start, reader.line_num + 1
                if any(value.strip() for value in fields):  # blank lines are not rows
                    _add_delimited_row(table, src, row, fields, delimiter)
    except UnicodeDecodeError as exc:
        raise CatalogueError(
            f"{src.name}: not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 1
        raise CatalogueError(f"{src.name} line {line}: cannot be parsed: {exc}") from None
    return table


def _add_delimited_row(
    table: _Table, src: _Source, row: int, fields: list[str], delimiter: str
) -> None:
    values = dict(zip(table.columns, fields, strict=False))  # short rows: absent values are ""
    # Spreadsheets pad rows with empty cells ("a,b,c,,"); only non-empty extra values are an error.
    if any(value.strip() for value in fields[len(table.columns) :]):
        shown = "a tab" if delimiter == "\t" else repr(delimiter)
        table.problems.append(
            src.problem(
                MALFORMED_ROW,
                f"the line has {len(fields)} fields but the header has {len(table.columns)}; "
                f"a value containing {shown} must be quoted",
                row,
            )
        )
        return
    table.rows.append((row, values))


def _read_jsonl(path: Path, src: _Source) -> _Table:
    table = _Table([], [])
    columns: dict[str, None] = {}  # ordered set: the union of keys in file order
    try:
        with path.open(encoding="utf-8-sig") as f:
            for row, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    detail = f"not valid JSON ({exc.msg} at column {exc.colno})"
                    table.problems.append(src.problem(MALFORMED_ROW, detail, row))
                    continue
                if not isinstance(record, dict):
                    detail = f'expected a JSON object {{"id": ...}}, got {type(record).__name__}'
                    table.problems.append(src.problem(MALFORMED_ROW, detail, row))
                    continue
                columns.update(dict.fromkeys(str(key) for key in record))
                table.rows.append((row, record))
    except UnicodeDecodeError as exc:
        raise CatalogueError(
            f"{src.name}: not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8"
        ) from None
    table.columns = list(columns)
    return table


def _read_parquet(path: Path, src: _Source) -> _Table:
    import pandas as pd  # only Parquet needs pandas; keep `import prodcat.catalogue` light

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:
        raise CatalogueError(f"{src.name}: cannot be read as Parquet: {exc}") from None
    frame.columns = [str(name) for name in frame.columns]
    frame = frame.astype(object).where(frame.notna(), None)  # NaN / NA / NaT -> None
    records: list[dict[str, Any]] = frame.to_dict(orient="records")  # type: ignore[assignment]
    return _Table(list(frame.columns), list(enumerate(records, start=1)))


_READERS: dict[str, tuple[str, Callable[[Path, _Source], _Table]]] = {
    ".csv": ("line", lambda path, src: _read_delimited(path, src, ",")),
    ".tsv": ("line", lambda path, src: _read_delimited(path, src, "\t")),
    ".jsonl": ("line", _read_jsonl),
    ".ndjson": ("line", _read_jsonl),
    ".parquet": ("row", _read_parquet),
}


def _cell(value: Any) -> str:
    """A table value as text: JSON numbers and Parquet ints give the same id strings as CSV."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars from Parquet
        return _cell(value.tolist())
    if isinstance(value, list | tuple):
        return " ".join(_cell(item) for item in value)
    return str(value)


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def _join_text(parts: Iterable[str]) -> str:
    """Join title, description... with ". ", skipping empty parts and doubled punctuation."""
    out = ""
    for part in (p for p in map(_clean_text, parts) if p):
        if out:
            out += " " if out[-1] in ".!?:;" else ". "
        out += part
    return out


# --------------------------------------------------------------------------------------------------
# Checking rows


@dataclass(frozen=True)
class _Record:
    """A row that passed the checks that do not need its image."""

    src: _Source
    row: int
    id: str
    text: str
    image: Path | None
    image_value: str  # as written in the source, for messages
    label: CategoryPath | None
    text_column: str | None
    image_column: str | None


def _check_columns(
    columns: list[str], mapping: ColumnMapping, name: str, require_labels: bool | None
) -> bool:
    """Raise `CatalogueError` for missing required columns; return whether labels are present."""
    label_names = list(mapping.label_names)
    if require_labels is None:
        # Label columns the user named are required; the default 'category' only if present.
        require_labels = mapping.label_columns is not None or (
            mapping.label_column not in (None, _DEFAULT_LABEL_COLUMN)
        )
    if require_labels and not label_names:
        raise CatalogueError(f"{name}: labels are required but the mapping names no label column")
    required = [mapping.id_column, *mapping.text_columns]
    if mapping.image_column:
        required.append(mapping.image_column)
    if require_labels:
        required += label_names
    required = list(dict.fromkeys(required))
    missing = [c for c in required if c not in columns]
    if missing:
        raise CatalogueError(_missing_columns_message(name, required, columns, missing))
    twice = sorted({c for c in required + label_names if columns.count(c) > 1})
    if twice:
        raise CatalogueError(f"{name}: the header names the column(s) {twice} more than once")
    return bool(label_names) and all(c in columns for c in label_names)


def _missing_columns_message(
    name: str, expected: list[str], found: list[str], missing: list[str]
) -> str:
    shown: list[str] = found[:_MAX_COLUMNS_SHOWN]
    if len(found) > _MAX_COLUMNS_SHOWN:
        shown.append(f"... {len(found) - _MAX_COLUMNS_SHOWN} more")
    by_folded = {c.casefold(): c for c in found}
    hints = []
    for column in missing:
        close = by_folded.get(column.casefold()) or next(
            iter(difflib.get_close_matches(column, found, n=1, cutoff=0.75)), None
        )
        if close:
            hints.append(f"{close!r} for {column!r}")
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    return (
        f"{name}: expected the columns {expected}, but only {shown} were found "
        f"(missing: {missing}{hint}); "
        "pass --id-column / --text-column / --image-column / --label-column (or --label-columns) "
        "to map yours"
    )


class _LabelError(ValueError):
    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


def _parse_label(values: dict[str, Any], mapping: ColumnMapping) -> CategoryPath:
    """The label path of a row; raises `_LabelError` naming the column when it is unusable."""
    if mapping.label_columns is not None:
        return _parse_label_levels(values, mapping.label_columns)
    column = mapping.label_column or ""
    value: Any = values.get(column)
    if hasattr(value, "tolist"):  # a Parquet list column
        value = value.tolist()
    if isinstance(value, list | tuple):  # JSON / Parquet: a list of level names
        levels = tuple(_clean_text(_cell(v)) for v in value)
        if levels and all(levels):
            return levels
        raise _LabelError(column, f"the category {list(levels)!r} is empty or has an empty level")
    try:
        levels = parse_path(_cell(value).strip(), mapping.separator)
    except ValueError as exc:
        raise _LabelError(column, str(exc)) from None
    return tuple(map(_clean_text, levels))  # "Sports  Shoes" and "Sports Shoes" are one class


def _parse_label_levels(values: dict[str, Any], columns: tuple[str, ...]) -> CategoryPath:
    levels = [_clean_text(_cell(values.get(c))) for c in columns]
    # Trailing empty levels make a shorter path (taxonomies are rarely equally deep everywhere).
    while levels and not levels[-1]:
        levels.pop()
    if not levels:
        raise _LabelError(
            columns[0], f"the category is empty; expected a name in the columns {list(columns)}"
        )
    if "" in levels:
        gap = levels.index("")
        deeper = columns[len(levels) - 1]
        raise _LabelError(columns[gap], f"the level is empty but the deeper {deeper!r} is not")
    return tuple(levels)


def _check_row(
    row: int,
    values: dict[str, Any],
    src: _Source,
    mapping: ColumnMapping,
    labelled: bool,
    first_row: dict[str, int],
) -> _Record | Problem:
    """Everything about a row except its image; returns the record or the rejecting problem."""
    id_ = _cell(values.get(mapping.id_column)).strip()
    if not id_:
        detail = "the id is empty; expected a unique product id"
        return src.problem(MISSING_ID, detail, row, column=mapping.id_column)
    if id_ in first_row:
        first = first_row[id_]
        detail = f"the id {id_} was already used on {src.unit} {first}; ids must be unique"
        return src.problem(DUPLICATE_ID, detail, row, id_, mapping.id_column)
    first_row[id_] = row
    label: CategoryPath | None = None
    if labelled:
        try:
            label = _parse_label(values, mapping)
        except _LabelError as exc:
            return src.problem(BAD_LABEL, exc.reason, row, id_, exc.column)
    image_value = _cell(values.get(mapping.image_column)).strip() if mapping.image_column else ""
    if image_value.startswith(("http://", "https://")):
        detail = (
            f"{image_value} is a URL; images are not downloaded, expected a local file path "
            f"relative to {src.base_dir}"
        )
        return src.problem(MISSING_IMAGE, detail, row, id_, mapping.image_column)
    return _Record(
        src=src,
        row=row,
        id=id_,
        text=_join_text(_cell(values.get(c)) for c in mapping.text_columns),
        image=src.image_path(image_value) if image_value else None,
        image_value=image_value,
        label=label,
        text_column=", ".join(mapping.text_columns) or None,
        image_column=mapping.image_column,
    )


def _records_from_table(
    table: _Table, src: _Source, mapping: ColumnMapping, labelled: bool
) -> tuple[list[_Record], list[Problem]]:
    records: list[_Record] = []
    problems = list(table.problems)
    first_row: dict[str, int] = {}
    for row, values in table.rows:
        checked = _check_row(row, values, src, mapping, labelled, first_row)
        if isinstance(checked, Problem):
            problems.append(checked)
        else:
            records.append(checked)
    return records, problems


# --------------------------------------------------------------------------------------------------
# The folder layout: root/<level>/.../<id>.jpg with <id>.txt beside it


@dataclass
class _Entry:
    images: list[Path] = field(default_factory=list)
    text: Path | None = None


def _folder_entries(root: Path) -> dict[tuple[Path, str], _Entry]:
    """(folder, stem) -> the image(s) and text file of that product, hidden files skipped."""
    entries: dict[tuple[Path, str], _Entry] = defaultdict(_Entry)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            entries[path.parent, path.stem].images.append(path)
        elif suffix == ".txt":
            entries[path.parent, path.stem].text = path
    return dict(sorted(entries.items()))


def _read_folder(root: Path) -> tuple[list[_Record], list[Problem], bool]:
    """Records and problems of a folder tree, and whether any product has a .txt file."""
    entries = _folder_entries(root)
    if not entries:
        raise CatalogueError(
            f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) or .txt files found; expected "
            f"{root.name}/<class>/<id>.jpg with an optional <id>.txt beside each image"
        )
    # Files directly in the root have no class; that is fine only if no file has one.
    labelled = any(folder != root for folder, _ in entries)
    records: list[_Record] = []
    problems: list[Problem] = []
    first_file: dict[str, str] = {}
    for (folder, stem), entry in entries.items():
        checked = _check_folder_entry(root, folder, stem, entry, labelled, first_file)
        for item in checked:
            if isinstance(item, Problem):
                problems.append(item)
            else:
                records.append(item)
    return records, problems, any(e.text is not None for e in entries.values())


def _check_folder_entry(
    root: Path,
    folder: Path,
    stem: str,
    entry: _Entry,
    labelled: bool,
    first_file: dict[str, str],
) -> list[_Record | Problem]:
    """The record of one product of the folder layout, or the problems that reject it."""
    files = [*entry.images, *([entry.text] if entry.text is not None else [])]
    names = [f.relative_to(root).as_posix() for f in files]
    src = _Source(names[0], root, None)
    out: list[_Record | Problem] = []
    # 123.jpg beside 123.png: one id, two photos; the first (sorted) one is the product's.
    for name in names[1 : len(entry.images)]:
        detail = f"the id {stem} is also used by {names[0]}; file names (without suffix) are ids"
        out.append(_Source(name, root, None).problem(DUPLICATE_ID, detail, 0, stem))
    if stem in first_file:
        detail = f"the id {stem} is also used by {first_file[stem]}; ids must be unique"
        return [*out, src.problem(DUPLICATE_ID, detail, 0, stem)]
    first_file[stem] = src.name
    label = folder.relative_to(root).parts or None
    if labelled and label is None:
        detail = (
            "the file is directly in the catalogue folder; expected it inside a class folder, "
            f"e.g. {root.name}/<class>/{files[0].name}"
        )
        return [*out, src.problem(BAD_LABEL, detail, 0, stem)]
    text = ""
    if entry.text is not None:
        text = _clean_text(entry.text.read_text(encoding="utf-8", errors="replace"))
    image = entry.images[0].resolve() if entry.images else None
    record = _Record(src, 0, stem, text, image, names[0] if image else "", label, None, None)
    return [*out, record]


# --------------------------------------------------------------------------------------------------
# Checking images


@dataclass(frozen=True)
class _ImageCheck:
    sha256: str | None
    kind: str | None = None  # MISSING_IMAGE or UNREADABLE_IMAGE when the image cannot be used
    reason: str = ""


def _check_image(
    path: Path, verify: bool, decoded: Callable[[str], bool] | None = None
) -> _ImageCheck:
    """Hash the bytes (the content address) and, if `verify`, prove that they decode (unless
    `decoded` knows the hash: the same bytes decoded before)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _ImageCheck(None, MISSING_IMAGE)
    except IsADirectoryError:
        return _ImageCheck(None, UNREADABLE_IMAGE, "it is a folder, not an image file")
    except OSError as exc:
        return _ImageCheck(None, UNREADABLE_IMAGE, f"it cannot be read ({exc.strerror})")
    key = hashlib.sha256(data).hexdigest()
    known = bool(data) and decoded is not None and decoded(key)
    if (verify and not known) or not data:  # an empty file is caught without decoding
        try:
            read_image(data, draft_size=_VERIFY_DRAFT_SIZE)
        except ImageError as exc:
            return _ImageCheck(None, UNREADABLE_IMAGE, str(exc))
    return _ImageCheck(key)


def _check_images(
    paths: Iterable[Path],
    verify: bool,
    progress: bool,
    decoded: Callable[[str], bool] | None = None,
) -> dict[Path, _ImageCheck]:
    """Check each distinct path once, in threads: Pillow and hashlib release the GIL."""
    unique = list(dict.fromkeys(paths))
    results: dict[Path, _ImageCheck] = {}
    workers = min(8, os.cpu_count() or 1)
    bar = progress_bar("checking images", len(unique), enabled=progress and bool(unique))
    with bar as advance, ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(unique), _IMAGE_BATCH):
            batch = unique[start : start + _IMAGE_BATCH]
            for path, check in zip(
                batch, pool.map(lambda p: _check_image(p, verify, decoded), batch), strict=True
            ):
                results[path] = check
                advance(1)
    return results


def _judge(
    record: _Record, check: _ImageCheck | None, expect_text: bool, expect_image: bool
) -> tuple[Product | None, list[Problem]]:
    """Apply the content policy: accept the record (maybe with warnings) or reject it."""
    src, row, id_ = record.src, record.row, record.id
    if check is not None and check.kind is not None:
        detail = _image_detail(record, check)
        return None, [src.problem(check.kind, detail, row, id_, record.image_column)]
    if record.image is None and not record.text:
        return None, [src.problem(NO_CONTENT, _no_content_detail(record), row, id_)]
    warnings = []
    if record.image is None and expect_image:
        detail = "no image is given; the product will be classified from its text alone"
        warnings.append(src.problem(NO_IMAGE, detail, row, id_, record.image_column, "warning"))
    if not record.text and expect_text:
        detail = "the text is empty; the product will be classified from its photo alone"
        warnings.append(src.problem(EMPTY_TEXT, detail, row, id_, record.text_column, "warning"))
    sha256 = check.sha256 if check is not None else None
    return Product(id_, record.text, record.image, record.label, sha256, row), warnings


def _image_detail(record: _Record, check: _ImageCheck) -> str:
    if check.kind != MISSING_IMAGE:
        return f"the file {record.image_value} cannot be used as an image: {check.reason}"
    detail = f"the file {record.image_value} does not exist"
    if not Path(record.image_value).is_absolute():
        detail += f"; expected a path relative to {record.src.base_dir}"
    return detail


def _no_content_detail(record: _Record) -> str:
    if record.text_column is None and record.image_column is None:
        return "the product has neither an image nor a non-empty .txt file"
    wanted = []
    if record.text_column:
        wanted.append(f"text in {record.text_column!r}")
    if record.image_column:
        wanted.append(f"an image path in {record.image_column!r}")
    return f"the row has neither text nor an image; expected {' or '.join(wanted)}"


def _leaf_warnings(products: Sequence[Product], source: str, column: str | None) -> list[Problem]:
    """One warning per leaf name filed under several parents, with the size of each class."""
    by_name: dict[str, list[tuple[CategoryPath, int]]] = defaultdict(list)
    for label, count in Counter(p.label for p in products if p.label is not None).items():
        by_name[label[-1]].append((label, count))
    warnings = []
    for name, classes in sorted(by_name.items()):
        if len(classes) < 2:
            continue
        classes.sort(key=lambda item: (-item[1], item[0]))
        listed = ", ".join(f"{format_path(label)} ({count})" for label, count in classes)
        message = (
            f"{source}: {name!r} occurs under {len(classes)} parents: {listed}; "
            "each full path is its own class"
        )
        warnings.append(
            Problem(LEAF_UNDER_SEVERAL_PARENTS, message, source, None, None, column, "warning")
        )
    return warnings


# --------------------------------------------------------------------------------------------------
# Loading


def load_catalogue(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    verify_images: bool = True,
    progress: bool = False,
    require_labels: bool | None = None,
    decoded: Callable[[str], bool] | None = None,
) -> Catalogue:
    """Load a catalogue file (.csv, .tsv, .jsonl, .ndjson, .parquet) or folder tree.

    Args:
        path: the table, or the root of a ``root/<level>/.../<id>.jpg`` folder tree.
        mapping: which columns hold the id, text, image path and category (tables only).
        verify_images: decode every image to catch corrupt files; else only hash the bytes.
        decoded: says whether an image's SHA-256 (hex) is known to decode, e.g. because the
            feature cache holds its features; such images are hashed but not decoded again
            (`prodcat train` with a warm cache: 7 of the 11 s of loading 37k photos).
        progress: show a progress bar on stderr while the images are checked.
        require_labels: ``None`` requires the label columns only when the mapping names them
            (``label_columns``, or a ``label_column`` other than the default ``"category"``,
            whose absence just means the catalogue is unlabelled); ``True`` / ``False`` force it.

    Raises:
        CatalogueError: the file is missing, of an unknown format, or lacks required columns.
    """
    path = Path(path)
    mapping = mapping if mapping is not None else ColumnMapping()
    if not path.exists():
        raise CatalogueError(f"{path}: no such file or folder")
    if path.is_dir():
        records, problems, expect_text = _read_folder(path)
        expect_image, leaf_column = True, None
    else:
        records, problems = _read_table(path, mapping, require_labels)
        expect_text, expect_image = bool(mapping.text_columns), mapping.image_column is not None
        leaf_column = mapping.label_names[-1] if mapping.label_names else None
    checks = _check_images(
        (r.image for r in records if r.image is not None), verify_images, progress, decoded
    )
    products = []
    for record in records:
        check = checks[record.image] if record.image is not None else None
        product, found = _judge(record, check, expect_text, expect_image)
        problems += found
        if product is not None:
            products.append(product)
    problems.sort(key=lambda p: (p.row or 0, p.source))  # file order (stable within a row)
    problems += _leaf_warnings(products, path.name, leaf_column)
    return Catalogue(path.resolve(), products, problems)


def _read_table(
    path: Path, mapping: ColumnMapping, require_labels: bool | None
) -> tuple[list[_Record], list[Problem]]:
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise CatalogueError(
            f"{path.name}: unknown catalogue format {suffix or '(no suffix)'!r}; expected one of "
            f"{', '.join(TABLE_SUFFIXES)}, or a folder with images in class subfolders"
        )
    unit, reader = _READERS[suffix]
    src = _Source(path.name, path.parent.resolve(), unit)
    table = reader(path, src)
    labelled = _check_columns(table.columns, mapping, src.name, require_labels)
    return _records_from_table(table, src, mapping, labelled)


# --------------------------------------------------------------------------------------------------
# Summary


def summarise(catalogue: Catalogue) -> dict[str, Any]:
    """A JSON-serialisable overview: sizes, classes, long tail, duplicate photos, problems."""
    products = catalogue.products
    rejected, warnings = catalogue.rejected, catalogue.warnings
    sizes = Counter(p.label for p in products if p.label is not None)
    ordered = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    n_labelled = sum(sizes.values())
    depth = max(map(len, sizes), default=0)
    photo_groups = [
        n for n in Counter(p.image_sha256 for p in products if p.image_sha256).values() if n > 1
    ]
    kinds = Counter(p.kind for p in catalogue.problems)
    return {
        "source": str(catalogue.source),
        "n_rows": len(products) + len(rejected),
        "n_products": len(products),
        "n_rejected": len(rejected),
        "n_warnings": len(warnings),
        "labelled": catalogue.labelled,
        "classes_per_level": [
            len({label[:k] for label in sizes if len(label) >= k}) for k in range(1, depth + 1)
        ],
        "n_classes": len(sizes),
        "class_sizes": {format_path(label): n for label, n in ordered},
        "long_tail": {
            "top10_share": sum(n for _, n in ordered[:10]) / n_labelled if n_labelled else 0.0,
            "n_classes_lt_10": sum(n < 10 for n in sizes.values()),
            "n_classes_lt_20": sum(n < 20 for n in sizes.values()),
        },
        "duplicate_photos": {
            "n_groups": len(photo_groups),
            "n_products": sum(photo_groups),
            "largest_group": max(photo_groups, default=0),
        },
        "problems_by_kind": {kind: kinds[kind] for kind in PROBLEM_KINDS if kinds[kind]},
        "rejected": [_problem_dict(p) for p in rejected],
        "warnings": [_problem_dict(p) for p in warnings],
    }


def _problem_dict(problem: Problem) -> dict[str, Any]:
    return {"id": problem.id, "row": problem.row, "kind": problem.kind, "message": problem.message}


def format_summary(
    summary: dict[str, Any], *, max_classes: int = 12, max_problems: int = 10
) -> RenderableType:
    """A terminal report of `summarise`'s output: overview, largest classes, first problems."""
    parts: list[RenderableType] = [_overview_table(summary)]
    if summary["class_sizes"]:
        parts.append(_classes_table(summary, max_classes))
    for key, style in (("rejected", "red"), ("warnings", "yellow")):
        if summary[key]:
            parts.append(_problems_table(summary[key], key, style, max_problems))
    return Group(*parts)


def _overview_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Catalogue check", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", Text(summary["source"]))  # Text: no rich markup in user data
    table.add_row("products", f"{summary['n_products']:,} of {summary['n_rows']:,} rows accepted")
    rejected = f"{summary['n_rejected']:,}"
    table.add_row("rejected", f"[red]{rejected}[/red]" if summary["n_rejected"] else rejected)
    table.add_row("warnings", f"{summary['n_warnings']:,}")
    if summary["labelled"]:
        levels = " / ".join(f"{n:,}" for n in summary["classes_per_level"])
        table.add_row("classes", f"{summary['n_classes']:,} (nodes per level: {levels})")
        tail = summary["long_tail"]
        table.add_row(
            "long tail",
            f"the 10 largest classes hold {tail['top10_share']:.0%} of products; "
            f"{_count(tail['n_classes_lt_10'], 'class', 'classes')} under 10 products, "
            f"{tail['n_classes_lt_20']:,} under 20",
        )
    else:
        table.add_row("classes", "none: the catalogue is unlabelled")
    dup = summary["duplicate_photos"]
    if dup["n_groups"]:
        table.add_row(
            "duplicate photos",
            f"{_count(dup['n_groups'], 'group')} of byte-identical photos "
            f"({dup['n_products']:,} products, largest {dup['largest_group']}); "
            "each group stays in one split",
        )
    if summary["problems_by_kind"]:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in summary["problems_by_kind"].items())
        table.add_row("problems", kinds)
    return table


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def _classes_table(summary: dict[str, Any], limit: int) -> Table:
    sizes: dict[str, int] = summary["class_sizes"]
    total = sum(sizes.values())
    table = Table(title="Largest classes", title_justify="left")
    table.add_column("class")
    table.add_column("products", justify="right")
    table.add_column("share", justify="right")
    for name, n in list(sizes.items())[:limit]:
        table.add_row(Text(name), f"{n:,}", f"{n / total:.1%}")
    if len(sizes) > limit:
        rest = list(sizes.values())[limit:]
        table.add_row(
            f"... {len(rest)} more", f"{sum(rest):,}", f"{sum(rest) / total:.1%}", style="dim"
        )
    return table


def _problems_table(problems: list[dict[str, Any]], title: str, style: str, limit: int) -> Table:
    table = Table(title=f"{title.capitalize()} ({len(problems):,})", title_justify="left")
    table.add_column("kind", style=style, no_wrap=True)
    table.add_column("message", overflow="fold")
    for problem in problems[:limit]:
        table.add_row(problem["kind"], Text(problem["message"]))
    if len(problems) > limit:
        table.add_row("", f"... and {len(problems) - limit:,} more", style="dim")
    return table
