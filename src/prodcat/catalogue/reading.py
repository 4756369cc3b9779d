"""Reading tables and folder trees into records, and checking each row."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, Literal

from prodcat.catalogue.products import (
    BAD_LABEL,
    DUPLICATE_ID,
    IMAGE_SUFFIXES,
    MALFORMED_ROW,
    MISSING_ID,
    MISSING_IMAGE,
    CatalogueError,
    ColumnMapping,
    Problem,
)
from prodcat.taxonomy.tree import CategoryPath, parse_path

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
    try:  # only Parquet needs pandas; keep `import prodcat.catalogue` light
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError as exc:  # the base install has neither
        raise CatalogueError(
            f"{src.name}: reading Parquet needs {exc.name}, which this install lacks: "
            'pip install "prodcat[parquet]" (or give a .csv or .jsonl file)'
        ) from None

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
