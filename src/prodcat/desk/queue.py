"""Building the review queue from a model's predictions over a catalogue.

Products the model sends to people (decision review / unknown) are queued with their top-5
suggestions; accepted ones are recorded as auto-labelled. Re-running adds new products once and
re-scores the ones nobody has answered yet with the (possibly newer) model, so the queue is
re-ordered most-uncertain-first by whichever model ran last: active learning. Each queued product
keeps the version of the model that scored it (`prodcat.model.bundle.model_version`, the one the
API reports), and the desk shows the model that queued last.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select

from prodcat.catalogue import Catalogue, Product
from prodcat.desk.db import Database, QueueItem, ReviewAnswer, Setting, put_setting, utcnow
from prodcat.features.cache import FeatureCache
from prodcat.model.bundle import Model
from prodcat.model.prediction import Prediction

QUEUED_DECISIONS = ("review", "unknown")


@dataclass
class QueueResult:
    added: int = 0
    rescored: int = 0
    unchanged: int = 0
    queued: int = 0  # of the products seen, how many wait for people
    auto_labelled: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # product id -> why it got no answer


def build_queue(
    db: Database,
    model: Model,
    catalogue: Catalogue | Sequence[Product],
    *,
    cache: FeatureCache | None = None,
) -> QueueResult:
    """Predict `catalogue` with a saved `model` and queue (or auto-label) every product."""
    if not model.version:
        raise ValueError("the model was never saved: save it first, the queue records its version")
    products = list(catalogue.products if isinstance(catalogue, Catalogue) else catalogue)
    predictions = model.predict(products, cache)
    result = record_predictions(db, products, predictions, model.version)
    record_model(db, model)
    add_to_taxonomy(db, model.classes)
    if isinstance(catalogue, Catalogue) and catalogue.labelled:
        add_to_taxonomy(db, [" > ".join(p.label) for p in products if p.label])
    return result


@dataclass(frozen=True)
class QueueModel:
    """The model that queued last, as the desk's header shows it."""

    name: str  # its folder's name
    head: str
    version: str  # prodcat.model.bundle.model_version


def record_model(db: Database, model: Model) -> None:
    """Remember `model` as the one that queued last (the desk's header shows it)."""
    name = model.folder.name if model.folder is not None else model.head_kind
    shown = QueueModel(name=name, head=model.head_kind, version=model.version)
    with db.session() as s, s.begin():
        put_setting(s, "queue_model", json.dumps(asdict(shown), ensure_ascii=False))


def queue_model(db: Database) -> QueueModel | None:
    """The model that queued last; None before any queue was built."""
    value = db.get_setting("queue_model")
    return QueueModel(**json.loads(value)) if value else None


def record_predictions(
    db: Database, products: Sequence[Product], predictions: Sequence[Prediction], version: str
) -> QueueResult:
    result = QueueResult()
    with db.session() as s, s.begin():
        answered = set(s.scalars(select(ReviewAnswer.product_id).distinct()))
        existing = {i.product_id: i for i in s.scalars(select(QueueItem))}
        for product, pred in zip(products, predictions, strict=True):
            if not pred.top:
                result.failed[product.id] = pred.error or "the model gave no answer"
                continue
            values = _item_values(product, pred, version)
            item = existing.get(product.id)
            if item is None:
                item = QueueItem(product_id=product.id, created_at=utcnow(), **values)
                s.add(item)
                existing[product.id] = item
                result.added += 1
            elif product.id in answered or item.model_version == version:
                result.unchanged += 1
            else:
                for key, value in values.items():
                    setattr(item, key, value)
                result.rescored += 1
            if values["queued"]:
                result.queued += 1
            else:
                result.auto_labelled += 1
    return result


def _item_values(product: Product, pred: Prediction, version: str) -> dict[str, object]:
    return {
        "title": product.text,
        "image_path": str(Path(product.image).resolve()) if product.image else None,
        "decision": pred.decision,
        "queued": pred.decision in QUEUED_DECISIONS,
        "category": pred.top[0][0],
        "probability": float(pred.top[0][1]),
        "ood_score": pred.ood_score,
        "top_json": json.dumps([[c, round(float(p), 6)] for c, p in pred.top]),
        "model_version": version,
        "updated_at": utcnow(),
    }


def taxonomy(db: Database) -> list[str]:
    """Every category path a reviewer can pick: the model's, the catalogue's, proposed ones."""
    with db.session() as s:
        row = s.get(Setting, "taxonomy")
        paths = set(json.loads(row.value)) if row else set()
        paths |= set(s.scalars(select(ReviewAnswer.category).where(ReviewAnswer.new_category)))
    return sorted(paths)


def add_to_taxonomy(db: Database, paths: Sequence[str]) -> None:
    with db.session() as s, s.begin():
        row = s.get(Setting, "taxonomy")
        known = set(json.loads(row.value)) if row else set()
        put_setting(s, "taxonomy", json.dumps(sorted(known | set(paths)), ensure_ascii=False))
