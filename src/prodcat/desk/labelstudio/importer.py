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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
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
        desk = _Desk(s, annotations)
        for a in annotations:
            _import_one(desk, a, result)
    return result


CHUNK = 500  # ids per IN (...) query


class _Desk:
    """What the import reads, loaded in a few queries up front (one query per annotation made a
    5,000-task import take half a minute), and kept current as answers change."""

    def __init__(self, s: Session, annotations: list[Annotation]) -> None:
        self.s = s
        pids = sorted({a.product_id for a in annotations})
        keys = sorted({a.key for a in annotations})
        self.items = {i.product_id: i for i in _chunked(s, QueueItem, QueueItem.product_id, pids)}
        self.rows = {
            r.key: r for r in _chunked(s, LabelStudioAnnotation, LabelStudioAnnotation.key, keys)
        }
        answers = _chunked(s, ReviewAnswer, ReviewAnswer.product_id, pids)
        self.answers = {(x.product_id, x.reviewer): x for x in answers}
        self.by_id = {x.id: x for x in answers}
        self.counts = Counter(x.product_id for x in answers)
        self.needed = answers_needed(s)
        row = s.get(Setting, "taxonomy")
        self.known = set(json.loads(row.value)) if row else set()

    def answer_of(self, row: LabelStudioAnnotation | None, a: Annotation) -> ReviewAnswer | None:
        """The answer this annotation gave before, else this annotator's answer to the product
        (an import made before annotation ids were kept, or their second annotation)."""
        if row is not None and row.answer_id is not None and row.answer_id in self.by_id:
            return self.by_id[row.answer_id]
        return self.answers.get((a.product_id, REVIEWER_PREFIX + a.annotator))

    def add(self, answer: ReviewAnswer) -> None:
        self.s.add(answer)
        self.s.flush()  # its id, for the annotation's record
        self.answers[(answer.product_id, answer.reviewer)] = answer
        self.by_id[answer.id] = answer
        self.counts[answer.product_id] += 1

    def withdraw(self, answer: ReviewAnswer) -> None:
        self.s.delete(answer)
        self.s.flush()
        self.answers.pop((answer.product_id, answer.reviewer), None)
        self.by_id.pop(answer.id, None)
        self.counts[answer.product_id] -= 1

    def keep(self, row: LabelStudioAnnotation | None, a: Annotation, answer_id: int | None) -> None:
        if row is None:
            row = self.rows[a.key] = LabelStudioAnnotation(key=a.key, product_id=a.product_id)
            self.s.add(row)
        row.task_id, row.updated_at = a.task_id, a.updated_at
        row.reviewer = REVIEWER_PREFIX + a.annotator
        row.skipped, row.lead_time_s, row.answer_id = a.skipped, a.lead_time_s, answer_id


def _chunked(s: Session, model: Any, column: Any, values: list[str]) -> list[Any]:
    found: list[Any] = []
    for n in range(0, len(values), CHUNK):
        found += s.scalars(select(model).where(column.in_(values[n : n + CHUNK])))
    return found


def _import_one(desk: _Desk, a: Annotation, result: ImportResult) -> None:
    item = desk.items.get(a.product_id)
    if item is None or not item.queued:
        result.problems.append(f"{a.where}: the product is not in the desk's review queue")
        return
    row = desk.rows.get(a.key)
    if row is not None and a.updated_at <= row.updated_at:
        result.already += 1  # imported before and not edited since
        return
    if a.skipped:
        _record_skip(desk, a, row, result)
        return
    category = _category(a, result)
    if category is None:
        return
    answer = desk.answer_of(row, a)
    if answer is not None and answer.category == category:
        result.already += 1
        desk.keep(row, a, answer.id)
        return
    if answer is None:
        if not _slot_left(desk, a, result):
            return
        answer = ReviewAnswer(
            product_id=a.product_id, reviewer=REVIEWER_PREFIX + a.annotator, source="labelstudio"
        )
        _fill(answer, item, category, category not in desk.known, a)
        desk.add(answer)
        result.added += 1
    else:
        result.notes.append(
            f"{a.where}: {a.annotator} changed the answer from {answer.category!r} to "
            f"{category!r} (edited {a.updated_at.isoformat(timespec='seconds')}Z): replaced"
        )
        _fill(answer, item, category, category not in desk.known, a)
        result.replaced += 1
    if answer.new_category:
        result.proposed += 1
        result.notes.append(
            f"{a.where}: {category!r} is not in the taxonomy: imported as a proposed new category"
        )
    desk.keep(row, a, answer.id)


def _slot_left(desk: _Desk, a: Annotation, result: ImportResult) -> bool:
    """Whether the product has an answer slot left under the desk's overlap setting."""
    taken = desk.counts[a.product_id]
    if taken < desk.needed:
        return True
    result.problems.append(
        f"{a.where}: {a.annotator}'s answer left out: the product has {taken} of the "
        f"{desk.needed} answer(s) the desk's overlap setting asks for"
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


def _fill(answer: ReviewAnswer, item: QueueItem, category: str, new: bool, a: Annotation) -> None:
    answer.category = category
    answer.new_category = new
    answer.model_suggestion = item.category
    answer.agreed = category == item.category
    answer.created_at = a.updated_at  # the answer's time is its last edit


def _record_skip(
    desk: _Desk, a: Annotation, row: LabelStudioAnnotation | None, result: ImportResult
) -> None:
    """A skip takes no answer slot; an answer this annotation gave before is withdrawn."""
    answer = desk.by_id.get(row.answer_id) if row and row.answer_id else None
    if row is not None and answer is not None:
        result.notes.append(
            f"{a.where}: {a.annotator} skipped it after answering {answer.category!r}: "
            "the answer is withdrawn"
        )
        row.answer_id = None
        desk.s.flush()  # the link goes before the answer does
        desk.withdraw(answer)
    if row is None or not row.skipped:
        result.skips += 1
    else:
        result.already += 1
    desk.keep(row, a, None)
