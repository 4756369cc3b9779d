"""Label Studio's answers into the desk: one answer per annotator per product, edits replace,
skips are kept as skips, off-list categories come in as proposed new ones.

Annotations are keyed by Label Studio's annotation id. Importing the same export again changes
nothing; an annotation edited since (a later `updated_at` and a different answer) replaces the
answer it gave, and the import says so. A new answer takes one of the product's answer slots (the
desk's overlap setting, answers per product, counts desk and Label Studio answers alike); when
none is left the answer stays out, with a message, and comes in on a later import if a slot
frees. Every message names the Label Studio task id and the product id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prodcat.desk.db import (
    Database,
    LabelStudioAnnotation,
    QueueItem,
    ReviewAnswer,
    Setting,
)
from prodcat.desk.labelstudio.reading import Annotation, load_export, read_export
from prodcat.desk.labelstudio.tasks import answers_needed

REVIEWER_PREFIX = "labelstudio:"


@dataclass
class ImportResult:
    added: int = 0
    replaced: int = 0  # edited in Label Studio since the last import: the answer was replaced
    already: int = 0  # unchanged since the last import
    skips: int = 0  # skips recorded (new or changed)
    proposed: int = 0  # answers with a category outside the taxonomy (flagged new_category)
    notes: list[str] = field(default_factory=list)  # what changed and why (edits, proposals)
    problems: list[str] = field(default_factory=list)  # one line per answer left out, with why


def import_labelstudio(
    db: Database, export: Path | list[Any], users: dict[int, str] | None = None
) -> ImportResult:
    """Read a JSON or JSON_MIN export (a file, or its parsed list) into the desk; `users` maps
    Label Studio user ids to emails/names (`--users`). Reviewer 'labelstudio:<annotator>'."""
    records = load_export(export) if isinstance(export, Path) else export
    result = ImportResult()
    annotations = read_export(records, users or {}, result.problems)
    # Earliest first: the first answers fill the overlap's slots, as on the desk.
    annotations.sort(key=lambda a: (a.created_at, a.key))
    with db.session() as s, s.begin():
        known = _taxonomy(s)
        for a in annotations:
            _import_one(s, a, known, result)
    return result


def _taxonomy(s: Session) -> set[str]:
    row = s.get(Setting, "taxonomy")
    return set(json.loads(row.value)) if row else set()


def _import_one(s: Session, a: Annotation, known: set[str], result: ImportResult) -> None:
    item = s.get(QueueItem, a.product_id)
    if item is None or not item.queued:
        result.problems.append(f"{a.where}: the product is not in the desk's review queue")
        return
    row = s.get(LabelStudioAnnotation, a.key)
    if row is not None and a.updated_at <= row.updated_at:
        result.already += 1  # imported before and not edited since
        return
    reviewer = REVIEWER_PREFIX + a.annotator
    if a.skipped:
        _record_skip(s, a, row, reviewer, result)
        return
    category = _category(a, result)
    if category is None:
        return
    answer = _answer_of(s, row, a.product_id, reviewer)
    if answer is not None and answer.category == category:
        result.already += 1
        _keep(s, row, a, reviewer, answer.id)
        return
    if answer is None:
        if not _slot_left(s, a, result):
            return
        answer = ReviewAnswer(product_id=a.product_id, reviewer=reviewer, source="labelstudio")
        s.add(answer)
        result.added += 1
    else:
        result.notes.append(
            f"{a.where}: {a.annotator} changed the answer from {answer.category!r} to "
            f"{category!r} (edited {a.updated_at.isoformat(timespec='seconds')}Z): replaced"
        )
        result.replaced += 1
    new = category not in known
    _fill(answer, item, category, new, a)
    if new:
        result.proposed += 1
        result.notes.append(
            f"{a.where}: {category!r} is not in the taxonomy: imported as a proposed new category"
        )
    s.flush()
    _keep(s, row, a, reviewer, answer.id)


def _slot_left(s: Session, a: Annotation, result: ImportResult) -> bool:
    """Whether the product has an answer slot left under the desk's overlap setting."""
    taken = s.scalar(
        select(func.count(ReviewAnswer.id)).where(ReviewAnswer.product_id == a.product_id)
    )
    needed = answers_needed(s)
    if (taken or 0) < needed:
        return True
    result.problems.append(
        f"{a.where}: {a.annotator}'s answer left out: the product has {taken} of the "
        f"{needed} answer(s) the desk's overlap setting asks for"
    )
    return False


def _category(a: Annotation, result: ImportResult) -> str | None:
    """The one category the annotation gives: a typed new category wins over a pick (the
    annotator wrote it on purpose); anything but exactly one is reported."""
    chosen = a.typed or a.picked
    if len(chosen) != 1:
        got = ", ".join(repr(c) for c in a.picked + a.typed) or "nothing"
        result.problems.append(
            f"{a.where}: {a.annotator}'s answer left out: expected one category, got {got}"
        )
        return None
    return chosen[0]


def _answer_of(
    s: Session, row: LabelStudioAnnotation | None, product_id: str, reviewer: str
) -> ReviewAnswer | None:
    """The answer this annotation gave before, else this annotator's answer to the product (an
    import made before annotation ids were kept, or their second annotation of the task)."""
    if row is not None and row.answer_id is not None:
        answer = s.get(ReviewAnswer, row.answer_id)
        if answer is not None:
            return answer
    return s.scalar(
        select(ReviewAnswer).where(
            ReviewAnswer.product_id == product_id, ReviewAnswer.reviewer == reviewer
        )
    )


def _fill(answer: ReviewAnswer, item: QueueItem, category: str, new: bool, a: Annotation) -> None:
    answer.category = category
    answer.new_category = new
    answer.model_suggestion = item.category
    answer.agreed = category == item.category
    answer.created_at = a.updated_at  # the answer's time is its last edit


def _record_skip(
    s: Session,
    a: Annotation,
    row: LabelStudioAnnotation | None,
    reviewer: str,
    result: ImportResult,
) -> None:
    """A skip takes no answer slot; an answer this annotation gave before is withdrawn."""
    answer = s.get(ReviewAnswer, row.answer_id) if row and row.answer_id else None
    if answer is not None:
        result.notes.append(
            f"{a.where}: {a.annotator} skipped it after answering {answer.category!r}: "
            "the answer is withdrawn"
        )
        row.answer_id = None  # type: ignore[union-attr]
        s.delete(answer)
        s.flush()
    if row is None or not row.skipped:
        result.skips += 1
    else:
        result.already += 1
    _keep(s, row, a, reviewer, None)


def _keep(
    s: Session,
    row: LabelStudioAnnotation | None,
    a: Annotation,
    reviewer: str,
    answer_id: int | None,
) -> None:
    if row is None:
        row = LabelStudioAnnotation(key=a.key, product_id=a.product_id)
        s.add(row)
    row.task_id, row.reviewer, row.updated_at = a.task_id, reviewer, a.updated_at
    row.skipped, row.lead_time_s, row.answer_id = a.skipped, a.lead_time_s, answer_id
    s.flush()
