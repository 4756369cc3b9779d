"""The admin page's figures: progress, per reviewer, per class, agreement, and blind audits."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select

from prodcat.desk.audit import audit_summary
from prodcat.desk.db import Database, QueueItem, ReviewAnswer
from prodcat.desk.review import answers_per_product


def left_for_desk(db: Database, reviewer: str) -> dict[str, int]:
    """What the desk shows on every product, in two cheap counts: products still needing an
    answer, and this reviewer's answers."""
    with db.session() as s:
        needed = answers_per_product(s)
        n_answers = (
            select(func.count(ReviewAnswer.id))
            .where(ReviewAnswer.product_id == QueueItem.product_id)
            .scalar_subquery()
        )
        left = s.scalar(
            select(func.count()).select_from(QueueItem).where(QueueItem.queued, n_answers < needed)
        )
        mine = s.scalar(
            select(func.count(ReviewAnswer.id)).where(ReviewAnswer.reviewer == reviewer)
        )
    return {"left": int(left or 0), "mine": int(mine or 0)}


def progress(db: Database) -> dict[str, Any]:
    with db.session() as s:
        needed = answers_per_product(s)
        queued = {
            i.product_id: i.category for i in s.scalars(select(QueueItem).where(QueueItem.queued))
        }
        auto = s.scalar(select(func.count()).select_from(QueueItem).where(~QueueItem.queued)) or 0
        answers = list(s.scalars(select(ReviewAnswer).order_by(ReviewAnswer.id)))
    by_product: dict[str, list[ReviewAnswer]] = defaultdict(list)
    for a in answers:
        by_product[a.product_id].append(a)
    done = {pid for pid in queued if len(by_product.get(pid, [])) >= needed}
    per_class: dict[str, dict[str, int]] = defaultdict(lambda: {"queued": 0, "done": 0})
    for pid, suggested in queued.items():
        per_class[suggested]["queued"] += 1
        per_class[suggested]["done"] += pid in done
    return {
        "answers_per_product": needed,
        "queued": len(queued),
        "done": len(done),
        "left": len(queued) - len(done),
        "auto_labelled": int(auto),
        "answers": len(answers),
        "per_reviewer": dict(Counter(a.reviewer for a in answers).most_common()),
        "per_class": dict(sorted(per_class.items(), key=lambda kv: (-kv[1]["queued"], kv[0]))),
        "agreement": agreement(answers),
        "audit": audit_summary(db),
    }


def agreement(answers: list[ReviewAnswer]) -> dict[str, Any]:
    """Model vs reviewer: share of answers equal to the model's top suggestion. Reviewer vs
    reviewer: share of products with two or more answers whose first two answers agree."""
    model_agree = sum(a.agreed for a in answers)
    firsts: dict[str, list[str]] = defaultdict(list)
    for a in answers:
        firsts[a.product_id].append(a.category)
    pairs = [cats[:2] for cats in firsts.values() if len(cats) >= 2]
    same = sum(a == b for a, b in pairs)
    return {
        "model_vs_reviewer": model_agree / len(answers) if answers else None,
        "model_vs_reviewer_n": len(answers),
        "reviewer_vs_reviewer": same / len(pairs) if pairs else None,
        "reviewer_vs_reviewer_n": len(pairs),
    }
