"""The predictions file (`prodcat predict --out`): one row per input row, as .parquet, .csv or
.jsonl (one file), or a folder of such shards (`part-00000.parquet` ...).

Its names never collide with a catalogue's when the two are joined on `id`: the answer is
`predicted_category` and `predicted_probability`, the product's text comes back as `input_title`,
and when the input is labelled its label as `true_category` with `correct` (the predicted category
is exactly the true one; an ancestor chosen by `--min-confidence` is not). CSV flattens the top-5
into `top1` ... `top5_probability`; JSONL and Parquet keep them as a list.
Predictions with their reasons (`prodcat predict --explain`) add `explanation` (a JSON object;
a JSON string in CSV and Parquet) and, in CSV, `top_words`: the title words that pushed most
towards the answer.

Both engines (`--engine local` and `ray`) write through `PredictionsWriter`, a row at a time, so
the two files match byte for byte when the answers do.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from prodcat.catalogue import Product
from prodcat.model.prediction import TOP_K, Prediction
from prodcat.taxonomy.tree import format_path

ANSWER_COLUMNS = ("predicted_category", "predicted_probability", "decision")
TRUTH_COLUMNS = ("true_category", "correct")
DETAIL_COLUMNS = ("ood_score", "level_probabilities", "modalities")
EXPLANATION_COLUMNS = ("top_words", "explanation")
TOP_WORDS = 3
FORMATS = (".parquet", ".csv", ".jsonl")
SHARD_ROWS = 100_000  # rows per shard of a folder of shards
SHARD_PREFIX = "part-"


@dataclass(frozen=True)
class Target:
    """Where predictions go: one file, or a folder of shards; `suffix` is the format."""

    path: Path
    suffix: str
    folder: bool


def parse_target(text: str | Path) -> Target:
    """`--out`: a name with a suffix is one file of that format (.parquet, .csv, .jsonl); a name
    ending in '/' is a folder of shards in its suffix's format; a name without a suffix, a folder
    of Parquet shards. Raises ValueError saying what is expected."""
    raw = str(text)
    path = Path(raw)
    folder = raw.endswith(("/", "\\")) or not path.suffix
    suffix = path.suffix.lower() or ".parquet"
    if suffix not in FORMATS:
        kind = "folder" if folder else "file"
        raise ValueError(
            f"--out {raw}: unknown {kind} format {path.suffix!r}; expected a .parquet, .csv or "
            ".jsonl file name, or a folder ('preds/' for Parquet shards, 'preds.csv/' for CSV)"
        )
    if folder and path.is_dir() and any(path.glob(f"{SHARD_PREFIX}*")):
        raise ValueError(
            f"--out {raw}: the folder already holds predictions ({SHARD_PREFIX}* files); remove "
            "them or name a new folder"
        )
    if not folder and path.is_dir():
        raise ValueError(f"--out {raw}: is a folder; expected a file name (or end it with '/')")
    return Target(path, suffix, folder)


def write_predictions(
    path: str | Path, predictions: Sequence[Prediction], products: Sequence[Product] = ()
) -> Path:
    """Write one row per prediction to `path` (see `parse_target`: .parquet, .csv, .jsonl or a
    folder); `products` (matched by id) give each row its input title and, when any is
    labelled, the truth columns."""
    labelled = any(p.label for p in products)
    explained = any(p.explanation is not None for p in predictions)
    with PredictionsWriter(parse_target(path), labelled, explained=explained) as writer:
        writer.write(prediction_records(predictions, products, labelled))
    return Path(path)


def prediction_records(
    predictions: Sequence[Prediction], products: Iterable[Product], labelled: bool
) -> list[dict[str, Any]]:
    """The rows of the predictions file as JSON values, `products` matched by id."""
    by_id = {p.id: p for p in products}
    return [prediction_record(p, by_id.get(p.id), labelled) for p in predictions]


class PredictionsWriter:
    """Writes prediction records as they come: one file, or shards of `SHARD_ROWS` rows."""

    def __init__(
        self,
        target: Target,
        labelled: bool,
        *,
        explained: bool = False,
        shard_rows: int = SHARD_ROWS,
    ) -> None:
        self.target = target
        self.labelled = labelled
        self.explained = explained  # the records carry their reasons (`--explain`)
        self.shard_rows = shard_rows
        self.rows = 0
        self._in_shard = 0
        self._shards = 0
        self._handle: IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._parquet: Any = None  # pyarrow.parquet.ParquetWriter
        # Each file is written under a temporary name and renamed when complete, so a run that
        # fails leaves no half file; `_done` are the complete ones (removed too on failure).
        self._tmp: tuple[Path, Path] | None = None
        self._done: list[Path] = []
        if target.folder:
            target.path.mkdir(parents=True, exist_ok=True)

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        start = 0
        while start < len(records):
            if self._current() is None or (
                self.target.folder and self._in_shard >= self.shard_rows
            ):
                self._open_next()
            room = self.shard_rows - self._in_shard if self.target.folder else len(records)
            part = records[start : start + room]
            self._write_part(part)
            self._in_shard += len(part)
            self.rows += len(part)
            start += len(part)

    def close(self) -> Path:
        if self._current() is None:
            self._open_next()  # no rows: still an empty file (with its header) or one shard
        self._close_current()
        return self.target.path

    def __enter__(self) -> PredictionsWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
            return
        tmp = self._tmp
        self._tmp = None  # closed, never renamed into place
        self._close_current()
        for path in [*([tmp[0]] if tmp else []), *self._done]:
            path.unlink(missing_ok=True)

    def _current(self) -> object | None:
        return self._handle if self.target.suffix != ".parquet" else self._parquet

    def _open_next(self) -> None:
        self._close_current()
        path = self.target.path
        if self.target.folder:
            path = path / f"{SHARD_PREFIX}{self._shards:05d}{self.target.suffix}"
        self._shards += 1
        self._in_shard = 0
        tmp = path.with_name(f".tmp-{path.name}")
        self._tmp = (tmp, path)
        if self.target.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(tmp, parquet_schema(self.labelled, self.explained))
            return
        self._handle = tmp.open("w", encoding="utf-8", newline="")
        if self.target.suffix == ".csv":
            columns = csv_columns(self.labelled, self.explained)
            self._csv = csv.DictWriter(self._handle, fieldnames=columns)
            self._csv.writeheader()

    def _write_part(self, records: Sequence[dict[str, Any]]) -> None:
        if self._parquet is not None:
            import pyarrow as pa

            schema = parquet_schema(self.labelled, self.explained)
            rows = [_parquet_row(record) for record in records]
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=schema))
        elif self._csv is not None:
            self._csv.writerows(_csv_row(record) for record in records)
        elif self._handle is not None:
            for record in records:
                self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _close_current(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._handle is not None:
            self._handle.close()
        self._parquet = self._handle = self._csv = None
        if self._tmp is not None:
            tmp, final = self._tmp
            tmp.replace(final)
            self._done.append(final)
            self._tmp = None


def parquet_schema(labelled: bool, explained: bool = False) -> Any:
    """The Parquet columns: the JSONL record's, typed (the top-5 a list of structs; the
    explanation, when asked for, a JSON string)."""
    import pyarrow as pa

    fields = [
        ("id", pa.string()),
        ("input_title", pa.string()),
        ("predicted_category", pa.string()),
        ("predicted_probability", pa.float64()),
        ("decision", pa.string()),
    ]
    if labelled:
        fields += [("true_category", pa.string()), ("correct", pa.bool_())]
    top = pa.struct([("category", pa.string()), ("probability", pa.float64())])
    fields += [
        ("ood_score", pa.float64()),
        ("level_probabilities", pa.list_(pa.float64())),
        ("modalities", pa.list_(pa.string())),
        ("top", pa.list_(top)),
        ("error", pa.string()),
    ]
    if explained:
        fields.append(("explanation", pa.string()))
    return pa.schema(fields)


def _parquet_row(record: dict[str, Any]) -> dict[str, Any]:
    if "explanation" not in record:
        return record
    return record | {"explanation": json.dumps(record["explanation"], ensure_ascii=False)}


def csv_columns(labelled: bool, explained: bool = False) -> list[str]:
    """The CSV header: the truth columns only when the input was labelled, the explanation
    columns only when the predictions carry their reasons."""
    columns = ["id", "input_title", *ANSWER_COLUMNS]
    if labelled:
        columns += TRUTH_COLUMNS
    columns += DETAIL_COLUMNS
    for k in range(1, TOP_K + 1):
        columns += [f"top{k}", f"top{k}_probability"]
    columns.append("error")
    if explained:
        columns += EXPLANATION_COLUMNS
    return columns


def rejected_prediction(product_id: str, message: str) -> Prediction:
    """The answer of a row that could not be read: no category, the reason as its error."""
    return Prediction(
        id=product_id, category="", probability=0.0, level_probabilities=[], top=[], error=message
    )


class Tally:
    """What `prodcat predict` prints, counted from the file's records as they are written."""

    def __init__(self, decisions: Sequence[str]) -> None:
        self.answered = self.rejected = self.without_photo = self.correct = 0
        self.decisions = dict.fromkeys(decisions, 0)

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            if not record["predicted_category"]:
                self.rejected += 1
                continue
            self.answered += 1
            self.without_photo += bool(record["error"])
            self.correct += record.get("correct") is True
            if record["decision"] in self.decisions:
                self.decisions[record["decision"]] += 1

    def summary(self, out: str | Path, labelled: bool) -> str:
        """Two lines: the counts and where they went; the decisions (and the score, when every
        product is labelled)."""
        line = ", ".join(f"{d} {n:,}" for d, n in self.decisions.items())
        if labelled:
            line += f"; {self.correct:,} of {self.answered:,} correct (the file has labels)"
        return (
            f"{self.answered:,} products labelled, {self.rejected:,} rows rejected "
            f"({self.without_photo:,} answered without their photo): {out}\n{line}"
        )


def prediction_record(p: Prediction, product: Product | None, labelled: bool) -> dict[str, Any]:
    """One row as JSON values; no answer (a rejected row) leaves the answer fields empty."""
    answered = bool(p.category)
    record: dict[str, Any] = {
        "id": p.id,
        "input_title": product.text if product is not None else "",
        "predicted_category": p.category,
        "predicted_probability": p.probability if answered else None,
        "decision": p.decision if answered else None,
    }
    if labelled:
        truth = format_path(product.label) if product is not None and product.label else None
        record["true_category"] = truth
        record["correct"] = p.category == truth if answered and truth is not None else None
    record |= {
        "ood_score": p.ood_score,
        "level_probabilities": p.level_probabilities,
        "modalities": p.modalities,
        "top": [{"category": c, "probability": q} for c, q in p.top],
        "error": p.error,
    }
    if p.explanation is not None:
        record["explanation"] = p.explanation
    return record


def _csv_row(record: dict[str, Any]) -> dict[str, str]:
    row = {
        key: _csv_value(value) for key, value in record.items() if key not in ("top", "explanation")
    }
    if "explanation" in record:
        explanation = record["explanation"]
        row["explanation"] = json.dumps(explanation, ensure_ascii=False)
        pushes = [w for w in explanation["words"] if w["weight"] > 0][:TOP_WORDS]
        row["top_words"] = " ".join(w["word"] for w in pushes)
    row["level_probabilities"] = " | ".join(f"{x:.6f}" for x in record["level_probabilities"])
    row["modalities"] = "+".join(record["modalities"])
    for k, entry in enumerate(record["top"], start=1):
        row[f"top{k}"] = entry["category"]
        row[f"top{k}_probability"] = f"{entry['probability']:.6f}"
    return row


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)
