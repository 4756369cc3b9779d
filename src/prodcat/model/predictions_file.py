"""Writing predictions: JSONL keeps the structure; CSV flattens the top-5 into columns."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from prodcat.model.prediction import TOP_K, Prediction


def write_predictions(path: str | Path, predictions: Sequence[Prediction]) -> Path:
    """Write one row per product to `path` (.csv or .jsonl, by suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for p in predictions:
                handle.write(json.dumps(p.as_dict(), ensure_ascii=False) + "\n")
        return path
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: expected a .csv or .jsonl file name")
    columns = ["id", "category", "probability", "decision", "ood_score", "level_probabilities"]
    for k in range(1, TOP_K + 1):
        columns += [f"top{k}", f"top{k}_probability"]
    columns.append("error")
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for p in predictions:
            row: dict[str, object] = {
                "id": p.id,
                "category": p.category,
                "probability": f"{p.probability:.6f}" if p.category else "",
                "decision": p.decision if p.category else "",
                "ood_score": "" if p.ood_score is None else f"{p.ood_score:.6f}",
                "level_probabilities": " | ".join(f"{x:.6f}" for x in p.level_probabilities),
                "error": p.error or "",
            }
            for k, (category, probability) in enumerate(p.top, start=1):
                row[f"top{k}"], row[f"top{k}_probability"] = category, f"{probability:.6f}"
            writer.writerow(row)
    return path
