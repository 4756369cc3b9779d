"""The predictions file (`prodcat predict --out`): one row per input row, as .csv or .jsonl.

Its names never collide with a catalogue's when the two are joined on `id`: the answer is
`predicted_category` and `predicted_probability`, the product's text comes back as `input_title`,
and when the input is labelled its label as `true_category` with `correct` (the predicted category
is exactly the true one; an ancestor chosen by `--min-confidence` is not). CSV flattens the top-5
into `top1` ... `top5_probability`; JSONL keeps them as a list. Predictions with their reasons
(`prodcat predict --explain`) add `explanation` (a JSON object in CSV) and, in CSV, `top_words`:
the title words that pushed most towards the answer.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prodcat.catalogue import Product
from prodcat.model.prediction import TOP_K, Prediction
from prodcat.taxonomy.tree import format_path

ANSWER_COLUMNS = ("predicted_category", "predicted_probability", "decision")
TRUTH_COLUMNS = ("true_category", "correct")
DETAIL_COLUMNS = ("ood_score", "level_probabilities", "modalities")
EXPLANATION_COLUMNS = ("top_words", "explanation")
TOP_WORDS = 3


def write_predictions(
    path: str | Path, predictions: Sequence[Prediction], products: Sequence[Product] = ()
) -> Path:
    """Write one row per prediction to `path` (.csv or .jsonl, by suffix); `products` (matched
    by id) give each row its input title and, when any is labelled, the truth columns."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: expected a .csv or .jsonl file name")
    by_id = {p.id: p for p in products}
    labelled = any(p.label for p in products)
    explained = any(p.explanation is not None for p in predictions)
    records = [_record(p, by_id.get(p.id), labelled) for p in predictions]
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=csv_columns(labelled, explained))
        writer.writeheader()
        writer.writerows(_csv_row(record) for record in records)
    return path


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


def _record(p: Prediction, product: Product | None, labelled: bool) -> dict[str, Any]:
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
