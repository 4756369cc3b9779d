"""Checking a table's header against the column mapping: missing columns, near misses.

A column named almost like the one expected ('Category' for 'category') is named in the error with
the flag that maps it, and a missing default label column with such a near miss is an error, not
an unlabelled catalogue.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable

from prodcat.catalogue.products import DEFAULT_LABEL_COLUMN, CatalogueError, ColumnMapping

_MAX_COLUMNS_SHOWN = 20
# How alike two column names must be (difflib ratio, case and spacing ignored) to suggest one.
_CLOSE_NAME_CUTOFF = 0.75


def check_columns(
    columns: list[str], mapping: ColumnMapping, name: str, require_labels: bool | None
) -> bool:
    """Raise `CatalogueError` for missing required columns; return whether labels are present."""
    label_names = list(mapping.label_names)
    if require_labels is None:
        # Label columns the user named are required; the default 'category' only if present.
        require_labels = mapping.label_columns is not None or (
            mapping.label_column not in (None, DEFAULT_LABEL_COLUMN)
        )
        if not require_labels and label_names and label_names[0] not in columns:
            _refuse_a_near_miss(label_names[0], columns, name)
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
        raise CatalogueError(_missing_columns_message(name, required, columns, missing, mapping))
    twice = sorted({c for c in required + label_names if columns.count(c) > 1})
    if twice:
        raise CatalogueError(f"{name}: the header names the column(s) {twice} more than once")
    return bool(label_names) and all(c in columns for c in label_names)


def _refuse_a_near_miss(wanted: str, columns: list[str], name: str) -> None:
    """The default label column is absent: fine for an unlabelled catalogue, but a column named
    almost like it ('Category', 'categroy ') is a labelled catalogue read wrongly: say so."""
    close = close_column(wanted, columns)
    if close is not None:
        raise CatalogueError(
            f"{name}: no column {wanted!r}; did you mean {close!r}? pass "
            f"--label-column {shlex.quote(close)} (columns found: {_shown(columns)})"
        )


def close_column(wanted: str, found: Iterable[str]) -> str | None:
    """The column of `found` that is most likely `wanted` misspelt, or None.

    Names are compared without case, spaces, '_' or '-' ('Category ', 'CATEGORY'), then by
    spelling (difflib, 'categroy', 'categories'). A name that contains the whole wanted name and
    more ('subCategory', 'category_id') is another field, not a misspelling, and never matches.
    """
    key = _name_key(wanted)
    by_key: dict[str, str] = {}
    for column in found:
        by_key.setdefault(_name_key(column), column)
    if key in by_key:
        return by_key[key]
    candidates = [k for k in by_key if key not in k]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=_CLOSE_NAME_CUTOFF)
    return by_key[close[0]] if close else None


def _name_key(column: str) -> str:
    return "".join(c for c in column.casefold() if c not in " _-\t")


def _shown(found: list[str]) -> list[str]:
    shown: list[str] = found[:_MAX_COLUMNS_SHOWN]
    if len(found) > _MAX_COLUMNS_SHOWN:
        shown.append(f"... {len(found) - _MAX_COLUMNS_SHOWN} more")
    return shown


def _missing_columns_message(
    name: str, expected: list[str], found: list[str], missing: list[str], mapping: ColumnMapping
) -> str:
    close = {column: near for column in missing if (near := close_column(column, found))}
    hint = ""
    if close:
        meant = ", ".join(f"{near!r} for {column!r}" for column, near in close.items())
        hint = f"; did you mean {meant}? pass {' '.join(_flags(close, mapping))}"
    return (
        f"{name}: expected the columns {expected}, but only {_shown(found)} were found "
        f"(missing: {missing}{hint}); "
        "pass --id-column / --text-column / --image-column / --label-column (or --label-columns) "
        "to map yours"
    )


def _flags(close: dict[str, str], mapping: ColumnMapping) -> list[str]:
    """The flags that map each missing column's role to the near name found instead."""
    flags: dict[str, str] = {}
    for column, near in close.items():
        word = shlex.quote(near)
        if mapping.label_columns is not None and column in mapping.label_columns:
            levels = [close.get(c, c) for c in mapping.label_columns]
            flags["--label-columns"] = shlex.quote(",".join(levels))
        elif column == mapping.label_column:
            flags["--label-column"] = word
        elif column == mapping.id_column:
            flags["--id-column"] = word
        elif column == mapping.image_column:
            flags["--image-column"] = word
        else:  # a text column: the flag is repeated once per column
            texts = [close.get(c, c) for c in mapping.text_columns]
            flags["--text-column"] = " --text-column ".join(map(shlex.quote, texts))
    return [f"{flag} {value}" for flag, value in flags.items()]
