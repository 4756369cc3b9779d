"""The input read on the cluster into plain rows, with exactly the local engine's checks.

Each unit (one table, one shard of a folder of shards, or a folder tree of photos) is read in a
Ray task by `load_catalogue`, the local engine's reader, so a row gets the same error (and the same
file, line and column in it) on either engine. A unit becomes one row per accepted product, then
one per rejected row, in the order the local engine writes them; a unit that cannot be read at
all becomes a single UNREADABLE row carrying the reader's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodcat.catalogue import CatalogueError, ColumnMapping, Product, load_catalogue
from prodcat.catalogue.load import duplicate_across_shards, row_place, table_shards
from prodcat.model.predictions_file import prediction_record, rejected_prediction

PRODUCT, REJECTED, UNREADABLE = "product", "rejected", "unreadable"


@dataclass(frozen=True)
class Row:
    """One input row as it travels through Ray Data (all fields plain, none null)."""

    kind: str  # PRODUCT, REJECTED or UNREADABLE
    id: str  # a rejected row without an id: "line N", as the local engine writes it
    text: str
    image: str  # the photo's absolute path, "" for none
    label: str  # the category levels as a JSON list, "" for none
    sha256: str  # the photo's content address, "" when not hashed
    row: int
    message: str  # why the row was rejected / the unit unreadable
    place: str = ""  # a product's shard and line ("a.csv line 2"): ids are checked across shards

    def product(self) -> Product | None:
        """The product this row carries (a rejected row: the accepted one with its id, whose
        title and truth the predictions file shows, as locally), None without one."""
        if not self.text and not self.image and not self.label:
            return None
        label = tuple(json.loads(self.label)) if self.label else None
        image = Path(self.image) if self.image else None
        return Product(self.id, self.text, image, label, self.sha256 or None, self.row)


def input_units(path: Path) -> list[Path]:
    """What the cluster reads in parallel: each shard of a folder of shards, else `path`."""
    if not path.exists():
        raise CatalogueError(f"{path}: no such file or folder")
    shards = table_shards(path) if path.is_dir() else []
    return shards or [path]


def read_unit(
    item: Mapping[str, Any], *, mapping: ColumnMapping, verify_images: bool
) -> list[dict[str, Any]]:
    """A Ray Data `flat_map`: the rows of one unit (`item["path"]`)."""
    try:
        cat = load_catalogue(
            item["path"], mapping, verify_images=verify_images, require_labels=False
        )
    except CatalogueError as exc:
        return [vars(Row(UNREADABLE, "", "", "", "", "", 0, str(exc)))]
    path = Path(item["path"])
    places = path.is_file()  # a table or a shard; a folder tree's ids are its file names
    rows = [
        _product_row(PRODUCT, p, "", row_place(path, p.row) if places else "") for p in cat.products
    ]
    by_id = cat.by_id()
    for problem in cat.rejected:
        pid = problem.id or f"line {problem.row}"
        same = by_id.get(pid)
        if same is not None:  # a duplicate id: the file shows the first row's title, as locally
            rows.append(_product_row(REJECTED, same, problem.message))
        else:
            rows.append(vars(Row(REJECTED, pid, "", "", "", "", problem.row or 0, problem.message)))
    return rows


def _product_row(kind: str, p: Product, message: str, place: str = "") -> dict[str, Any]:
    label = json.dumps(list(p.label), ensure_ascii=False) if p.label else ""
    image = str(p.image) if p.image is not None else ""
    return vars(Row(kind, p.id, p.text, image, label, p.image_sha256 or "", p.row, message, place))


def batch_rows(batch: Mapping[str, Any]) -> list[Row]:
    """A Ray Data batch (columns of equal length) back into rows."""
    columns = {name: list(batch[name]) for name in Row.__dataclass_fields__}
    count = len(columns["kind"])
    return [
        Row(**{name: _plain(values[i]) for name, values in columns.items()}) for i in range(count)
    ]


def _plain(value: Any) -> Any:
    """numpy scalars (as batches hold them) as Python values."""
    return value.item() if hasattr(value, "item") else value


class FirstIds:
    """Ids across shards, on the driver: each shard is read in a task of its own, so only here
    can a product row whose id an earlier shard used be refused, as the local engine refuses it
    (the first row keeps the id; the later one becomes a rejected row showing the first one's
    title and truth)."""

    def __init__(self, id_column: str, labelled: bool) -> None:
        self.id_column = id_column
        self.labelled = labelled
        self.first: dict[str, tuple[str, str, Any]] = {}  # id -> place, title, truth

    def check(
        self, records: list[dict[str, Any]], kinds: list[str], places: list[str]
    ) -> list[dict[str, Any]]:
        """The records of one batch, in input order, with later duplicates refused."""
        out = []
        for record, kind, place in zip(records, kinds, places, strict=True):
            if kind == PRODUCT and place:
                pid = record["id"]
                first = self.first.setdefault(
                    pid, (place, record["input_title"], record.get("true_category"))
                )
                if first[0] != place:
                    record = self._refused(pid, place, first)
            out.append(record)
        return out

    def _refused(self, pid: str, place: str, first: tuple[str, str, Any]) -> dict[str, Any]:
        detail = duplicate_across_shards(pid, first[0])
        message = f"{place} (id {pid}), column {self.id_column!r}: {detail}"
        record = prediction_record(rejected_prediction(pid, message), None, self.labelled)
        record["input_title"] = first[1]
        if self.labelled:
            record["true_category"] = first[2]
        return record
