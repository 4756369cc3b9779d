"""Checking every photo and loading a catalogue: the one entry point, `load_catalogue`."""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prodcat.catalogue.columns import check_columns
from prodcat.catalogue.images import ImageError, read_image
from prodcat.catalogue.products import (
    DUPLICATE_ID,
    EMPTY_TEXT,
    LEAF_UNDER_SEVERAL_PARENTS,
    MISSING_IMAGE,
    NO_CONTENT,
    NO_IMAGE,
    TABLE_SUFFIXES,
    UNREADABLE_IMAGE,
    Catalogue,
    CatalogueError,
    ColumnMapping,
    Problem,
    Product,
)
from prodcat.catalogue.reading import (
    _READERS,
    _read_folder,
    _Record,
    _records_from_table,
    _Source,
)
from prodcat.progress import progress_bar
from prodcat.taxonomy.tree import CategoryPath, format_path

# Images are decoded at <= 64 px to prove they decode; JPEG draft mode makes big photos cheap.
_VERIFY_DRAFT_SIZE = 64
# Bounded batches keep the number of pending futures (and bytes in flight) small on huge catalogues.
_IMAGE_BATCH = 1024

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
    """Load a catalogue file (.csv, .tsv, .jsonl, .ndjson, .parquet), folder of such shards, or
    folder tree.

    Args:
        path: the table; a folder of tables (shards, read in name order; ids must be unique
            within each shard, photo paths are relative to each shard); or the root of a
            ``root/<level>/.../<id>.jpg`` folder tree.
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
    shards = table_shards(path) if path.is_dir() else [path]
    if not shards:
        records, problems, expect_text = _read_folder(path)
        expect_image, leaf_column = True, None
    else:
        records, problems = [], []
        for shard in shards:
            shard_records, shard_problems = _read_table(shard, mapping, require_labels)
            records += shard_records
            problems += shard_problems
        records, problems = _unique_across_shards(records, problems, mapping.id_column)
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
    # File order (stable within a row); shards in name order.
    order = {shard.name: i for i, shard in enumerate(shards)}
    problems.sort(key=lambda p: (order.get(p.source, 0), p.row or 0, p.source))
    problems += _leaf_warnings(products, path.name, leaf_column)
    return Catalogue(path.resolve(), products, problems)


def _unique_across_shards(
    records: list[_Record], problems: list[Problem], id_column: str
) -> tuple[list[_Record], list[Problem]]:
    """Each shard checks its own ids; an id already used in an earlier shard is refused the same
    way (the first row keeps it), so the answers have one row per id whatever the sharding."""
    first: dict[str, _Record] = {}
    kept: list[_Record] = []
    for record in records:
        earlier = first.setdefault(record.id, record)
        if earlier is record:
            kept.append(record)
            continue
        detail = duplicate_across_shards(record.id, earlier.src.where(earlier.row))
        problems.append(record.src.problem(DUPLICATE_ID, detail, record.row, record.id, id_column))
    return kept, problems


def duplicate_across_shards(product_id: str, first_place: str) -> str:
    """Why a row is refused whose id an earlier shard used ("a.csv line 2"); the Ray engine, which
    reads shards apart, says the same."""
    return (
        f"the id {product_id} was already used in {first_place}; ids must be unique across shards"
    )


def row_place(shard: Path, row: int) -> str:
    """Where a row is, as the loader's messages say it: "a.csv line 2", "b.parquet row 1"."""
    unit = _READERS[shard.suffix.lower()][0] if shard.suffix.lower() in _READERS else None
    return _Source(shard.name, shard.parent, unit).where(row)


def table_shards(folder: Path) -> list[Path]:
    """The tables directly in `folder` (a folder of shards), by name; [] for a folder tree of
    photos (whose tables, if any, sit in the class folders, never at the top)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in TABLE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


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
    labelled = check_columns(table.columns, mapping, src.name, require_labels)
    return _records_from_table(table, src, mapping, labelled)
