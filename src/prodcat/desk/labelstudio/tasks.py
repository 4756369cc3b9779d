"""The desk's queue as Label Studio tasks, and the record of what was exported.

A task's identity is its product id (`data.product_id`). Each export is recorded with a
fingerprint of what it showed, so the next export writes only products Label Studio does not have
yet: importing both files never duplicates a task. Products re-scored since their export are
counted apart (`changed`): `sync-labelstudio` updates those tasks in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prodcat.desk.db import (
    Database,
    LabelStudioTask,
    QueueItem,
    ReviewAnswer,
    Setting,
    utcnow,
)
from prodcat.desk.labelstudio.images import Images
from prodcat.desk.labelstudio.interface import FROM_NAME, SEPARATOR, TO_NAME, split


@dataclass
class Export:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    already: int = 0  # open products Label Studio has already (exported before, unchanged)
    changed: list[str] = field(default_factory=list)  # exported before, re-scored since
    problems: list[str] = field(default_factory=list)  # photos that did not go as asked
    photo_dirs: list[str] = field(default_factory=list)


def labelstudio_tasks(
    db: Database,
    images: Images | None = None,
    *,
    everything: bool = False,
    kind: str = "taxonomy",
    preselect: bool = False,
    record: bool = False,
    project: int | None = None,
) -> Export:
    """The open queue (products with fewer answers than the desk's overlap asks for) not exported
    before, as Label Studio tasks; `everything`: every queued product, exported or not.
    `preselect`: the model's answer comes as a prediction Label Studio pre-selects.
    `record`: remember them as exported (to `project` when known)."""
    images = images or Images()
    out = Export()
    with db.session() as s, s.begin():
        sent = {t.product_id: t for t in s.scalars(select(LabelStudioTask))}
        for item in queue_items(s, open_only=not everything):
            mark = fingerprint(item)
            before = sent.get(item.product_id)
            if before is not None and not everything:
                if before.fingerprint == mark:
                    out.already += 1
                else:
                    out.changed.append(item.product_id)
                continue
            out.tasks.append(task_of(item, images, kind, preselect, out.problems))
            if item.image_path:
                out.photo_dirs.append(str(Path(item.image_path).parent))
            if record:
                mark_exported(s, item.product_id, mark, project=project)
    return out


def queue_items(s: Session, *, open_only: bool) -> list[QueueItem]:
    stmt = select(QueueItem).where(QueueItem.queued)
    if open_only:
        n_answers = (
            select(func.count(ReviewAnswer.id))
            .where(ReviewAnswer.product_id == QueueItem.product_id)
            .scalar_subquery()
        )
        stmt = stmt.where(n_answers < answers_needed(s))
    return list(s.scalars(stmt.order_by(QueueItem.priority, QueueItem.product_id)))


def answers_needed(s: Session) -> int:
    """The desk's overlap: answers a product needs (prodcat.desk.review.answers_per_product)."""
    row = s.get(Setting, "answers_per_product")
    return int(row.value) if row else 1


def fingerprint(item: QueueItem) -> str:
    """What a task shows, hashed: a new model's suggestions or a new photo change it."""
    shown = [item.title, item.image_path, item.top_json, item.category, item.model_version]
    return hashlib.sha256(json.dumps(shown).encode("utf-8")).hexdigest()


def mark_exported(
    s: Session, product_id: str, mark: str, *, project: int | None, task_id: int | None = None
) -> None:
    row = s.get(LabelStudioTask, product_id)
    if row is None:
        row = LabelStudioTask(product_id=product_id)
        s.add(row)
    row.fingerprint, row.exported_at = mark, utcnow()
    row.project = project if project is not None else row.project
    row.task_id = task_id if task_id is not None else row.task_id


def task_of(
    item: QueueItem, images: Images, kind: str, preselect: bool, problems: list[str]
) -> dict[str, Any]:
    # A label check (prodcat audit --to-desk) carries its options without probabilities.
    top = [(str(c), None if p is None else float(p)) for c, p in json.loads(item.top_json)]
    check = item.decision == "check"
    image, why = images.url(item.product_id, item.image_path)
    if why:
        problems.append(f"product {item.product_id}: {why}")
    task: dict[str, Any] = {
        "data": {
            "product_id": item.product_id,
            "title": item.title,
            "image": image,
            "suggestions": [c for c, _ in top],
            "suggestions_text": "\n".join(
                f"{n}. {c}" if p is None else f"{n}. {c}  ({100 * p:.0f}%)"
                for n, (c, p) in enumerate(top, 1)
            ),
        }
    }
    if preselect and not check:  # a label check never shows an answer as the model's
        task["predictions"] = [prediction(item.category, item, kind)]
    return task


def prediction(category: str, item: QueueItem, kind: str) -> dict[str, Any]:
    """The model's answer in the interface's own result type, so Label Studio pre-selects it."""
    if kind == "taxonomy":
        value: dict[str, Any] = {"taxonomy": [split(category)]}
    else:
        value = {"choices": [SEPARATOR.join(split(category))]}
    return {
        "model_version": item.model_version,
        "score": item.probability,
        "result": [
            {"from_name": FROM_NAME, "to_name": TO_NAME, "type": kind, "value": value},
        ],
    }


def record_exported(db: Database, product_ids: list[str], project: int | None = None) -> None:
    """Remember these products as exported (after their file is written)."""
    with db.session() as s, s.begin():
        for pid in product_ids:
            item = s.get(QueueItem, pid)
            if item is not None:
                mark_exported(s, pid, fingerprint(item), project=project)


def write_tasks(tasks: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
