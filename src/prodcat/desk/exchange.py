"""Getting answers out: the labels CSV. Label Studio's tasks and exports live in
`prodcat.desk.labelstudio` (re-exported here for older callers)."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import select

from prodcat.desk.db import Database, ReviewAnswer
from prodcat.desk.labelstudio import ImportResult, import_labelstudio, labelstudio_config

LABEL_COLUMNS = ("id", "category", "reviewer", "time", "model_suggestion", "agreed", "new_category")
__all__ = ["ImportResult", "export_labels", "import_labelstudio", "labelstudio_config"]


def export_labels(db: Database, out: Path) -> int:
    """One row per answer, oldest first; returns the number of rows."""
    with db.session() as s:
        answers = list(
            s.scalars(select(ReviewAnswer).order_by(ReviewAnswer.created_at, ReviewAnswer.id))
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(LABEL_COLUMNS)
        for a in answers:
            writer.writerow(
                [
                    a.product_id,
                    a.category,
                    a.reviewer,
                    a.created_at.isoformat(timespec="seconds") + "Z",
                    a.model_suggestion,
                    str(a.agreed).lower(),
                    str(a.new_category).lower(),
                ]
            )
    return len(answers)
