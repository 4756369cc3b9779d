"""What a reviewer does: get the next product (leased), answer, skip, undo.

Each call is one transaction; `answer` returns only after its commit, so what the desk shows as
saved is on disk. Leases keep two reviewers off the same answer slot: a product that needs N
answers is handed out only while answers + unexpired leases of others < N.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, select, text
from sqlalchemy.orm import Session

from prodcat.desk.db import (
    Database,
    Lease,
    QueueItem,
    ReviewAnswer,
    Skip,
    User,
    put_setting,
    utcnow,
)

DEFAULT_LEASE_MINUTES = 10


class ReviewError(ValueError):
    """A request the desk refuses; the message says why."""


@dataclass
class Task:
    product_id: str
    title: str
    top: list[tuple[str, float | None]]  # no probabilities for a label check
    decision: str
    ood_score: float | None
    model_version: str
    has_image: bool
    explanation: dict[str, Any] | None = None  # the model's reasons (`prodcat queue --explain`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "title": self.title,
            "top": [{"category": c, "probability": p} for c, p in self.top],
            "decision": self.decision,
            "ood_score": self.ood_score,
            "model_version": self.model_version,
            "image_url": f"/image/{self.product_id}" if self.has_image else None,
            "explanation": shown_explanation(self.product_id, self.explanation),
        }


def shown_explanation(product_id: str, explanation: dict[str, Any] | None) -> Any:
    """The reasons as the desk shows them: each neighbour's photo as a desk URL (served only when
    its file exists), never the server's path."""
    if explanation is None:
        return None
    neighbours = [
        {
            **{k: v for k, v in n.items() if k != "photo"},
            "image_url": f"/image/{product_id}/neighbour/{k}" if n.get("photo") else None,
        }
        for k, n in enumerate(explanation.get("neighbours", []))
    ]
    return {**explanation, "neighbours": neighbours}


def task_of(item: QueueItem) -> Task:
    """What a reviewer sees. An audit (a product the model accepted) is shown as a review: the
    answer must not know that the model was sure. A label check (`prodcat.desk.label_checks`)
    has its options without probabilities, the catalogue's label unmarked among them."""
    return Task(
        product_id=item.product_id,
        title=item.title,
        top=[(str(c), None if p is None else float(p)) for c, p in json.loads(item.top_json)],
        decision="review" if item.audit else item.decision,
        ood_score=item.ood_score,
        model_version=item.model_version,
        has_image=bool(item.image_path),
        explanation=json.loads(item.explanation_json) if item.explanation_json else None,
    )


def answers_per_product(s: Session) -> int:
    from prodcat.desk.db import Setting

    row = s.get(Setting, "answers_per_product")
    return int(row.value) if row else 1


def lease_minutes(s: Session) -> float:
    from prodcat.desk.db import Setting

    row = s.get(Setting, "lease_minutes")
    return float(row.value) if row else DEFAULT_LEASE_MINUTES


def set_answers_per_product(db: Database, n: int) -> None:
    if n not in (1, 2):
        raise ReviewError(f"answers per product {n}: expected 1 or 2")
    with db.session() as s, s.begin():
        put_setting(s, "answers_per_product", str(n))


def set_lease_minutes(db: Database, minutes: float) -> None:
    if not 0 < minutes <= 24 * 60:
        raise ReviewError(f"lease minutes {minutes}: expected more than 0, at most 1440")
    with db.session() as s, s.begin():
        put_setting(s, "lease_minutes", str(minutes))


# PostgreSQL advisory lock key taken by every transaction that hands out or fills answer slots.
SLOT_LOCK = 0x70726F64  # "prod"


def _lock_slots(s: Session, db: Database) -> None:
    """Serialise slot changes on PostgreSQL, as BEGIN IMMEDIATE does on SQLite.

    Row locks alone are not enough: under READ COMMITTED a reviewer whose statement snapshot
    predates another's committed lease still sees the product as free once its row lock is
    released (the lease lives in another table), and both get it. The lock is held until commit.
    """
    if db.is_postgres:
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SLOT_LOCK})


def next_task(db: Database, user: User) -> Task | None:
    """The product this reviewer holds a lease on, else the most uncertain free one (leased;
    audits hide among them, see `prodcat.desk.queue`)."""
    with db.session() as s, s.begin():
        _lock_slots(s, db)
        now = utcnow()
        s.execute(delete(Lease).where(Lease.expires_at <= now))
        held = s.scalar(
            select(QueueItem)
            .join(Lease, Lease.product_id == QueueItem.product_id)
            .where(Lease.user_id == user.id)
            .order_by(QueueItem.priority, QueueItem.product_id)
            .limit(1)
        )
        if held is not None:
            return task_of(held)
        item = _free_item(s, db, user, answers_per_product(s))
        if item is None:
            return None
        expires = now + timedelta(minutes=lease_minutes(s))
        s.add(Lease(product_id=item.product_id, user_id=user.id, expires_at=expires))
        return task_of(item)


def _free_item(s: Session, db: Database, user: User, needed: int) -> QueueItem | None:
    n_answers = (
        select(func.count(ReviewAnswer.id))
        .where(ReviewAnswer.product_id == QueueItem.product_id)
        .scalar_subquery()
    )
    n_leases = (
        select(func.count(Lease.id))
        .where(Lease.product_id == QueueItem.product_id, Lease.user_id != user.id)
        .scalar_subquery()
    )
    mine = exists().where(
        ReviewAnswer.product_id == QueueItem.product_id, ReviewAnswer.reviewer == user.name
    )
    skipped = exists().where(and_(Skip.product_id == QueueItem.product_id, Skip.user_id == user.id))
    stmt = (
        select(QueueItem)
        .where(QueueItem.queued, ~mine, ~skipped, n_answers + n_leases < needed)
        .order_by(QueueItem.priority, QueueItem.product_id)
        .limit(1)
    )
    return s.scalar(stmt)


def answer(
    db: Database, user: User, product_id: str, category: str, *, new_category: bool = False
) -> ReviewAnswer:
    """Record the reviewer's category for a product and release the lease; committed on return."""
    category = " > ".join(part.strip() for part in category.split(">") if part.strip())
    if not category:
        raise ReviewError(f"product {product_id}: the category is empty; expected 'A > B > C'")
    with db.session() as s, s.begin():
        _lock_slots(s, db)
        item = s.get(QueueItem, product_id)
        if item is None or not item.queued:
            raise ReviewError(f"product {product_id!r} is not in the review queue")
        if s.scalar(select(ReviewAnswer).where(*_mine(product_id, user))) is not None:
            raise ReviewError(f"product {product_id!r}: you have answered it already")
        lease = s.scalar(select(Lease).where(*_lease_of(product_id, user)))
        if lease is None and _slots_left(s, product_id, user) <= 0:
            raise ReviewError(f"product {product_id!r} has all the answers it needs")
        row = ReviewAnswer(
            product_id=product_id,
            reviewer=user.name,
            category=category,
            new_category=new_category,
            model_suggestion=item.category,
            agreed=category == item.category,
            source="desk",
            created_at=utcnow(),
        )
        s.add(row)
        s.execute(delete(Lease).where(*_lease_of(product_id, user)))
        s.flush()
        return row


def _slots_left(s: Session, product_id: str, user: User) -> int:
    now = utcnow()
    taken = (
        s.scalar(select(func.count(ReviewAnswer.id)).where(ReviewAnswer.product_id == product_id))
        or 0
    )
    leased = (
        s.scalar(
            select(func.count(Lease.id)).where(
                Lease.product_id == product_id, Lease.user_id != user.id, Lease.expires_at > now
            )
        )
        or 0
    )
    return answers_per_product(s) - taken - leased


def _mine(product_id: str, user: User) -> tuple[Any, ...]:
    return (ReviewAnswer.product_id == product_id, ReviewAnswer.reviewer == user.name)


def _lease_of(product_id: str, user: User) -> tuple[Any, ...]:
    return (Lease.product_id == product_id, Lease.user_id == user.id)


def skip(db: Database, user: User, product_id: str) -> None:
    """Put the product aside for this reviewer (others still get it) and release the lease."""
    with db.session() as s, s.begin():
        if s.get(QueueItem, product_id) is None:
            raise ReviewError(f"product {product_id!r} is not in the review queue")
        if s.get(Skip, (product_id, user.id)) is None:
            s.add(Skip(product_id=product_id, user_id=user.id, created_at=utcnow()))
        s.execute(delete(Lease).where(*_lease_of(product_id, user)))


def undo(db: Database, user: User) -> Task | None:
    """Withdraw this reviewer's last desk answer; the product comes back to them, leased."""
    with db.session() as s, s.begin():
        _lock_slots(s, db)
        last = s.scalar(
            select(ReviewAnswer)
            .where(ReviewAnswer.reviewer == user.name, ReviewAnswer.source == "desk")
            .order_by(ReviewAnswer.created_at.desc(), ReviewAnswer.id.desc())
            .limit(1)
        )
        if last is None:
            return None
        item = s.get(QueueItem, last.product_id)
        s.delete(last)
        s.execute(delete(Lease).where(Lease.user_id == user.id))
        expires = utcnow() + timedelta(minutes=lease_minutes(s))
        s.add(Lease(product_id=last.product_id, user_id=user.id, expires_at=expires))
        return task_of(item) if item else None
