"""Label checks: the audit's suspects (`prodcat audit --to-desk`) queued as "check this label".

The reviewer sees the photo and the title with a short list of options: the catalogue's label and
the audit's suggestion, in alphabetical order, without probabilities, neither preselected nor
marked, so that nothing nudges the answer towards either (the search over every category stays
open). Answers are stored like every other answer (`prodcat review export` writes them) and fold
into training with `prodcat train --extra-labels`, where a person's label overrides the
catalogue's. The catalogue's label is kept in `items.given_category` for the record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from prodcat.audit import Suspect
from prodcat.desk.db import Database, QueueItem, ReviewAnswer, utcnow
from prodcat.desk.queue import add_to_taxonomy

CHECK_DECISION = "check"
# What the queue records as the "model" of a check: the audit, with its settings.
AUDIT_VERSION_PREFIX = "audit"


@dataclass
class LabelCheckResult:
    added: int = 0  # new items
    updated: int = 0  # unanswered items turned into checks (or re-checked)
    answered: int = 0  # products someone has answered already: left as they are


def queue_label_checks(
    db: Database, suspects: Sequence[Suspect], *, version: str = AUDIT_VERSION_PREFIX
) -> LabelCheckResult:
    """Queue each suspect as a label check, most suspect first in the desk's order."""
    result = LabelCheckResult()
    with db.session() as s, s.begin():
        answered = set(s.scalars(select(ReviewAnswer.product_id).distinct()))
        for suspect in suspects:
            if suspect.id in answered:
                result.answered += 1
                continue
            item = s.get(QueueItem, suspect.id)
            if item is None:
                item = QueueItem(product_id=suspect.id, created_at=utcnow())
                s.add(item)
                result.added += 1
            else:
                result.updated += 1
            for key, value in check_values(suspect, version).items():
                setattr(item, key, value)
    add_to_taxonomy(db, sorted({c for s in suspects for c in (s.given, s.suggested)}))
    return result


def check_values(suspect: Suspect, version: str) -> dict[str, object]:
    """The queue row of one check. `category` holds the audit's suggestion (so an answer's
    `agreed` says the reviewer took it); the options are sorted by name, probabilities left out."""
    options = sorted({suspect.given, suspect.suggested})
    return {
        "title": suspect.title,
        "image_path": str(Path(suspect.image).resolve()) if suspect.image else None,
        "decision": CHECK_DECISION,
        "queued": True,
        "audit": False,
        "category": suspect.suggested,
        "probability": suspect.suggested_probability,
        # Lowest first: the most suspect labels come before the model's uncertain products.
        "priority": 1.0 - suspect.score,
        "gate_case": None,
        "ood_score": None,
        "top_json": json.dumps([[c, None] for c in options]),
        "model_version": version,
        "given_category": suspect.given,
        "updated_at": utcnow(),
    }
