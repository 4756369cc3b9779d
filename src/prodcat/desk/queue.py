"""Building the review queue from a model's predictions over a catalogue.

Products the model sends to people (decision review / unknown) are queued with their top-5
suggestions; accepted ones are recorded as auto-labelled. Re-running adds new products once and
re-scores the ones nobody has answered yet with the (possibly newer) model, so the queue is
re-ordered most-uncertain-first by whichever model ran last: active learning. Each queued product
keeps the version of the model that scored it (`prodcat.model.bundle.model_version`, the one the
API reports), and the desk shows the model that queued last.

Blind audits: a random share (`audit_rate`, each accepted product drawn independently, whatever
its confidence) of the products the model accepts is queued too, as audits. The desk shows them
exactly like review tasks, at a random place in the queue, so a reviewer's answer is blind; the
answers measure the accepted accuracy in production (`prodcat.desk.audit`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

from sqlalchemy import select

from prodcat.catalogue import Catalogue, Product
from prodcat.desk.db import Database, QueueItem, ReviewAnswer, Setting, put_setting, utcnow
from prodcat.features.cache import FeatureCache
from prodcat.model.bundle import Model
from prodcat.model.explain import explain_encoded
from prodcat.model.prediction import Prediction
from prodcat.model.predictor import Predictor
from prodcat.taxonomy.tree import format_path, parse_path

QUEUED_DECISIONS = ("review", "unknown")
DEFAULT_AUDIT_RATE = 0.02
# A category proposed at the desk is offered among the suggestions once it has this many answers.
DEFAULT_PROPOSAL_ANSWERS = 3


@dataclass
class QueueResult:
    added: int = 0
    rescored: int = 0
    unchanged: int = 0
    queued: int = 0  # of the products seen, how many wait for people
    auto_labelled: int = 0
    audits: int = 0  # of the queued, how many are accepted products sent as blind audits
    failed: dict[str, str] = field(default_factory=dict)  # product id -> why it got no answer
    offered: list[str] = field(default_factory=list)  # proposed categories now suggested


def build_queue(
    db: Database,
    model: Model,
    catalogue: Catalogue | Sequence[Product],
    *,
    cache: FeatureCache | None = None,
    audit_rate: float = DEFAULT_AUDIT_RATE,
    seed: int | None = None,
    explain: bool = False,
    proposal_answers: int = DEFAULT_PROPOSAL_ANSWERS,
) -> QueueResult:
    """Predict `catalogue` with a saved `model` and queue (or auto-label) every product; a random
    `audit_rate` share of the accepted ones is queued as blind audits (`seed`: reproducible).
    `explain`: the queued products get the model's reasons, which the desk shows. Categories
    proposed at the desk with `proposal_answers` answers or more are added to the model first
    (`with_proposals`), so they are offered among the suggestions."""
    if not model.version:
        raise ValueError("the model was never saved: save it first, the queue records its version")
    products = list(catalogue.products if isinstance(catalogue, Catalogue) else catalogue)
    model, offered = with_proposals(db, model, products, proposal_answers, cache)
    predictions = model.predict(products, cache)
    result = record_predictions(
        db, products, predictions, model.version, audit_rate=audit_rate, seed=seed
    )
    result.offered = offered
    if explain:
        explain_queued(db, model, products, cache)
    record_model(db, model)
    add_to_taxonomy(db, model.classes)
    if isinstance(catalogue, Catalogue) and catalogue.labelled:
        add_to_taxonomy(db, [" > ".join(p.label) for p in products if p.label])
    return result


def explain_queued(
    db: Database, model: Model, products: Sequence[Product], cache: FeatureCache | None = None
) -> int:
    """Store the model's reasons for those of `products` waiting for people without any yet (a
    re-scored product lost its old ones); returns how many were explained."""
    by_id = {p.id: p for p in products}
    with db.session() as s:
        waiting = s.scalars(
            select(QueueItem.product_id).where(
                QueueItem.queued, QueueItem.explanation_json.is_(None)
            )
        )
        todo = [by_id[pid] for pid in waiting if pid in by_id]
    if not todo:
        return 0
    reasons: list[dict[str, object] | None]
    if cache is not None:
        reasons = list(explain_encoded(model, todo, cache))
    else:
        answers = Predictor(model).predict_products(todo, explain=True)
        reasons = [a.explanation for a in answers]
    with db.session() as s, s.begin():
        for product, reason in zip(todo, reasons, strict=True):
            item = s.get(QueueItem, product.id)
            if item is not None and reason is not None:
                item.explanation_json = json.dumps(reason, ensure_ascii=False)
    return len(todo)


def proposals(db: Database, known: Sequence[str], min_answers: int) -> dict[str, set[str]]:
    """Categories proposed at the desk that the model lacks, with `min_answers` answers or more:
    {category: the ids of the products answered with it}."""
    with db.session() as s:
        rows = s.execute(
            select(ReviewAnswer.category, ReviewAnswer.product_id).where(ReviewAnswer.new_category)
        ).all()
    answered: dict[str, list[str]] = {}
    for category, product_id in rows:
        if category not in known:
            answered.setdefault(category, []).append(product_id)
    return {c: set(ids) for c, ids in answered.items() if len(ids) >= min_answers}


def with_proposals(
    db: Database,
    model: Model,
    products: Sequence[Product],
    min_answers: int,
    cache: FeatureCache | None,
) -> tuple[Model, list[str]]:
    """`model` extended (in memory, `prodcat.model.extending`) with the proposed categories that
    have enough answers, their answered products of `products` as examples; its version names
    the base model and the examples, so re-queueing with the same answers changes nothing."""
    if min_answers < 1:
        raise ValueError(f"proposal answers {min_answers}: expected 1 or more")
    proposed = proposals(db, model.classes, min_answers)
    by_id = {p.id: p for p in products}
    examples = [
        replace(by_id[pid], label=parse_path(category))
        for category, ids in sorted(proposed.items())
        for pid in sorted(ids)
        if pid in by_id
    ]
    if not examples or model.extension_sample is None:
        return model, []
    from prodcat.model.extending import extend_model

    extended = extend_model(model, examples, cache=cache or FeatureCache()).model
    digest = hashlib.sha256(
        "\n".join(f"{p.id}\t{format_path(p.label or ())}" for p in examples).encode()
    )
    extended.version = f"{model.version}+{digest.hexdigest()[:6]}"
    extended.folder = model.folder
    return extended, sorted({format_path(p.label or ()) for p in examples})


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
    db: Database,
    products: Sequence[Product],
    predictions: Sequence[Prediction],
    version: str,
    *,
    audit_rate: float = 0.0,
    seed: int | None = None,
) -> QueueResult:
    """Queue or auto-label each product; `audit_rate` of the accepted ones become audits."""
    if not 0.0 <= audit_rate <= 1.0:
        raise ValueError(f"audit rate {audit_rate}: expected a share between 0 and 1")
    rng = random.Random(seed)  # seed None: drawn from the OS, not reproducible
    result = QueueResult()
    with db.session() as s, s.begin():
        answered = set(s.scalars(select(ReviewAnswer.product_id).distinct()))
        existing = {i.product_id: i for i in s.scalars(select(QueueItem))}
        in_queue = [i.probability for i in existing.values() if i.queued and not i.audit]
        fresh: list[tuple[QueueItem, dict[str, object]]] = []
        for product, pred in zip(products, predictions, strict=True):
            if not pred.top:
                result.failed[product.id] = pred.error or "the model gave no answer"
                continue
            draw = rng.random() < audit_rate  # one draw per product: a seed reproduces all
            item = existing.get(product.id)
            if item is not None and (product.id in answered or item.model_version == version):
                result.unchanged += 1
                queued, audit = item.queued, item.audit
            else:
                values = _item_values(product, pred, version, draw)
                if item is None:
                    item = existing[product.id] = QueueItem(product_id=product.id)
                    result.added += 1
                else:
                    result.rescored += 1
                fresh.append((item, values))
                queued, audit = bool(values["queued"]), bool(values["audit"])
            result.queued += queued
            result.audits += audit
            result.auto_labelled += not queued
        _hide_audits([v for _, v in fresh], in_queue, rng)
        for item, values in fresh:
            for key, value in values.items():
                setattr(item, key, value)
            if item.created_at is None:
                item.created_at = utcnow()
                s.add(item)
    return result


def _hide_audits(rows: list[dict[str, object]], in_queue: list[float], rng: random.Random) -> None:
    """Give each audit the queue position of a random review / unknown product (this batch's or
    one already queued): audits then come in the same order as what people are asked anyway (not
    last, where their high confidence would put them), and nothing in the order tells them apart."""
    pool = [cast(float, v["probability"]) for v in rows if v["queued"] and not v["audit"]]
    pool += in_queue
    for values in rows:
        if values["audit"]:
            values["priority"] = rng.choice(pool) if pool else rng.random()


def _item_values(
    product: Product, pred: Prediction, version: str, audit_draw: bool
) -> dict[str, object]:
    audit = pred.decision == "accept" and audit_draw
    probability = float(pred.top[0][1])
    return {
        "title": product.text,
        "image_path": str(Path(product.image).resolve()) if product.image else None,
        "decision": pred.decision,
        "queued": pred.decision in QUEUED_DECISIONS or audit,
        "audit": audit,
        "category": pred.top[0][0],
        "probability": probability,
        "priority": probability,
        "gate_case": "+".join(pred.modalities) or None,
        "ood_score": pred.ood_score,
        "top_json": json.dumps([[c, round(float(p), 6)] for c, p in pred.top]),
        "explanation_json": None,  # this answer's reasons come with `explain_queued`
        "model_version": version,
        "given_category": None,  # a label check re-scored by a model becomes a plain item
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
