"""Blind audits: what the answers to audited products say about the model's accepted accuracy.

An audit is a product the model accepted, queued anyway at random and shown like any review task
(`prodcat.desk.queue`). Its first answer (the one a single-answer desk would have had) says
whether the model's accepted label was right. The accepted accuracy of a model version is then
estimated by a binomial proportion with a Clopper-Pearson ("exact") 95% interval: it never covers
less than its nominal level, whatever n, which a promise made to a business needs (Wilson's is
narrower but may cover less at small n and accuracies near 1, exactly where audits live).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scipy.stats import beta
from sqlalchemy import func, select

from prodcat.desk.db import Database, QueueItem, ReviewAnswer

CONFIDENCE = 0.95
METHOD = "clopper-pearson"


@dataclass(frozen=True)
class AuditOutcome:
    """One answered audit: the model's accepted answer and whether the first person agreed."""

    product_id: str
    model_version: str
    gate_case: str | None  # "image+text", "image", "text"; None in rows older than audits
    confidence: float  # the model's calibrated confidence when it was queued
    correct: bool
    answered_at: datetime


def proportion_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson interval for k successes in n trials (n = 0: the whole of [0, 1])."""
    if not 0 <= k <= n:
        raise ValueError(f"{k} successes in {n} trials: expected 0 <= k <= n")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def audit_outcomes(db: Database, version: str | None = None) -> list[AuditOutcome]:
    """Every answered audit (of model `version` only, when given), oldest answer first."""
    stmt = (
        select(QueueItem, ReviewAnswer)
        .join(ReviewAnswer, ReviewAnswer.product_id == QueueItem.product_id)
        .where(QueueItem.audit)
        .order_by(ReviewAnswer.created_at, ReviewAnswer.id)
    )
    if version is not None:
        stmt = stmt.where(QueueItem.model_version == version)
    seen: dict[str, AuditOutcome] = {}
    with db.session() as s:
        for item, answer in s.execute(stmt).all():
            if item.product_id in seen:  # a second reviewer's answer: the first one counts
                continue
            seen[item.product_id] = AuditOutcome(
                product_id=item.product_id,
                model_version=item.model_version,
                gate_case=item.gate_case,
                confidence=float(item.probability),
                correct=answer.category == item.category,
                answered_at=answer.created_at,
            )
    return list(seen.values())


def estimate(outcomes: Iterable[AuditOutcome], auto_labelled: int) -> dict[str, Any]:
    """n, correct, accuracy and its interval; the implied wrong labels among `auto_labelled`."""
    flags = [o.correct for o in outcomes]
    n, k = len(flags), sum(flags)
    low, high = proportion_interval(k, n)
    return {
        "n": n,
        "correct": k,
        "accuracy": k / n if n else None,
        "low": low if n else None,
        "high": high if n else None,
        "auto_labelled": auto_labelled,
        # the accepted products nobody checked, times the estimated (interval of the) error rate
        "implied_wrong": round(auto_labelled * (1 - k / n), 1) if n else None,
        "implied_wrong_low": round(auto_labelled * (1 - high), 1) if n else None,
        "implied_wrong_high": round(auto_labelled * (1 - low), 1) if n else None,
    }


def audit_summary(db: Database) -> dict[str, Any]:
    """The `audit` figures of `prodcat review stats`: overall and per model version."""
    outcomes = audit_outcomes(db)
    with db.session() as s:
        rows = s.execute(
            select(QueueItem.model_version, func.count())
            .where(~QueueItem.queued, QueueItem.decision == "accept")
            .group_by(QueueItem.model_version)
        ).all()
        auto = {str(version): int(count) for version, count in rows}
        waiting = s.scalar(
            select(func.count())
            .select_from(QueueItem)
            .where(QueueItem.audit, ~QueueItem.product_id.in_(select(ReviewAnswer.product_id)))
        )
    by_version: dict[str, list[AuditOutcome]] = defaultdict(list)
    for o in outcomes:
        by_version[o.model_version].append(o)
    versions = sorted(set(by_version) | set(auto))
    return {
        "method": METHOD,
        "confidence": CONFIDENCE,
        "waiting": int(waiting or 0),
        "overall": estimate(outcomes, sum(auto.values())),
        "by_model": {v: estimate(by_version.get(v, []), int(auto.get(v, 0))) for v in versions},
    }
