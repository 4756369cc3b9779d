"""Blind audits on a real SQLite desk and the sample model: the draw is random, an audit looks
like any review task, `review stats` measures the accepted accuracy, `retune` moves the threshold
only when the audits show the promise broken, and an old database upgrades."""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from scipy.stats import binomtest
from sqlalchemy import select, text
from typer.testing import CliRunner

from desk_support import answer_all, create_database, csrf_of, lenient_copy
from prodcat.catalogue import Catalogue
from prodcat.cli import app
from prodcat.cli.desk import DEFAULT_AUDIT_RATE as CLI_AUDIT_RATE
from prodcat.desk import review
from prodcat.desk.app import create_app
from prodcat.desk.audit import AuditOutcome, audit_outcomes, audit_summary, proportion_interval
from prodcat.desk.auth import add_user
from prodcat.desk.db import Database, QueueItem, normalise_url
from prodcat.desk.queue import DEFAULT_AUDIT_RATE, record_predictions
from prodcat.desk.retune import audited_threshold
from prodcat.features.cache import FeatureCache
from prodcat.gate.gate import Gate
from prodcat.model.bundle import Model, model_version
from prodcat.monitor.drift import compare
from prodcat.monitor.observations import Observations

runner = CliRunner()
LENIENT = 0.5  # accepts nearly every sample product, at about 98% accuracy: not 99.5%


@pytest.fixture(scope="module")
def lenient(
    sample_model_dir: Path,
    sample_catalogue: Catalogue,
    private_cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
):
    """The sample model with a too-lenient gate, and its predictions over the sample."""
    folder = lenient_copy(sample_model_dir, tmp_path_factory.mktemp("lenient") / "m", LENIENT)
    model = Model.load(folder)
    preds = model.predict(sample_catalogue.products, FeatureCache(private_cache_dir))
    assert sum(p.decision == "accept" for p in preds) > 1000
    return model, preds


def queued_db(path: Path, lenient, catalogue: Catalogue, rate: float, seed: int | None):
    db = Database(f"sqlite:///{path}")
    model, preds = lenient
    record_predictions(db, catalogue.products, preds, model.version, audit_rate=rate, seed=seed)
    return db


def audit_ids(db: Database) -> set[str]:
    with db.session() as s:
        return set(s.scalars(select(QueueItem.product_id).where(QueueItem.audit)))


def truth(catalogue: Catalogue) -> dict[str, str]:
    return {p.id: " > ".join(p.label) for p in catalogue.products if p.label}


# -- the draw ---------------------------------------------------------------------------------
def test_audits_are_a_random_share_of_the_accepted(
    tmp_path: Path, lenient, sample_catalogue: Catalogue
) -> None:
    rate = 0.2
    db = queued_db(tmp_path / "a.db", lenient, sample_catalogue, rate, seed=1)
    with db.session() as s:
        accepted = list(s.scalars(select(QueueItem).where(QueueItem.decision == "accept")))
    audits = [i for i in accepted if i.audit]
    assert all(i.queued for i in audits)
    assert not any(i.queued for i in accepted if not i.audit)  # the others: auto-labelled
    n = len(accepted)
    sd = (n * rate * (1 - rate)) ** 0.5
    assert abs(len(audits) - rate * n) < 4 * sd  # about `rate` of the accepted
    # neither the most nor the least confident: audit ranks spread over the whole range
    order = sorted(accepted, key=lambda i: (i.probability, i.product_id))
    rank = {i.product_id: r / (n - 1) for r, i in enumerate(order)}
    mean_rank = statistics.fmean(rank[i.product_id] for i in audits)
    assert 0.4 < mean_rank < 0.6  # sd of the mean rank here: about 0.02
    assert min(rank[i.product_id] for i in audits) < 0.1
    assert max(rank[i.product_id] for i in audits) > 0.9
    # reproducible with a seed, and only with one
    same = queued_db(tmp_path / "b.db", lenient, sample_catalogue, rate, seed=1)
    other = queued_db(tmp_path / "c.db", lenient, sample_catalogue, rate, seed=2)
    free1 = queued_db(tmp_path / "d.db", lenient, sample_catalogue, rate, seed=None)
    free2 = queued_db(tmp_path / "e.db", lenient, sample_catalogue, rate, seed=None)
    assert audit_ids(same) == audit_ids(db)
    assert audit_ids(other) != audit_ids(db)
    assert audit_ids(free1) != audit_ids(free2)
    # re-running with the same model draws nothing new
    model, preds = lenient
    again = record_predictions(db, sample_catalogue.products, preds, model.version, audit_rate=1)
    assert again.unchanged == len(preds) and audit_ids(db) == {i.product_id for i in audits}


def test_the_audit_rate_defaults_and_bounds(
    tmp_path: Path, lenient, sample_catalogue: Catalogue
) -> None:
    assert CLI_AUDIT_RATE == DEFAULT_AUDIT_RATE == 0.02
    with pytest.raises(ValueError, match=r"audit rate 1\.5"):
        queued_db(tmp_path / "x.db", lenient, sample_catalogue, 1.5, seed=0)
    none = queued_db(tmp_path / "y.db", lenient, sample_catalogue, 0.0, seed=0)
    assert audit_ids(none) == set()


# -- blindness --------------------------------------------------------------------------------
def shape(value: object) -> object:
    """The kind of a JSON value: keys and types, not the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]] + [len(value)]
    return "number" if isinstance(value, float | int) else type(value).__name__


def test_an_audit_task_looks_like_a_review_task(
    tmp_path: Path, lenient, sample_catalogue: Catalogue, private_cache_dir: Path
) -> None:
    # a threshold at the median confidence: as many products for review as accepted ones
    model, preds = lenient
    median = statistics.median(p.top[0][1] for p in preds)
    products = sample_catalogue.products
    balanced = model.predict(products, FeatureCache(private_cache_dir), threshold=median)
    db = Database(f"sqlite:///{tmp_path / 'desk.db'}")
    record_predictions(db, products, balanced, model.version, audit_rate=0.3, seed=3)
    add_user(db, "ana", "correct horse", "reviewer")
    with db.session() as s:
        audits = set(s.scalars(select(QueueItem.product_id).where(QueueItem.audit)))
        queued = list(
            s.scalars(
                select(QueueItem)
                .where(QueueItem.queued)
                .order_by(QueueItem.priority, QueueItem.product_id)
            )
        )
    assert audits and len(queued) > len(audits)
    # the order does not give them away: audits spread through the queue, not bunched at its end
    positions = [r / (len(queued) - 1) for r, i in enumerate(queued) if i.audit]
    assert 0.3 < statistics.fmean(positions) < 0.7 and min(positions) < 0.2
    payloads: dict[bool, dict] = {}
    pages: dict[bool, str] = {}
    with TestClient(create_app(db), follow_redirects=False) as client:
        body = {"name": "ana", "password": "correct horse", "csrf_token": ""}
        body["csrf_token"] = csrf_of(client.get("/login").text)
        assert client.post("/login", data=body).status_code == 303
        csrf = csrf_of(client.get("/desk").text)
        for _ in range(len(queued)):
            page = client.get("/desk").text
            task = client.get("/api/next").json()["task"]
            is_audit = task["product_id"] in audits
            payloads.setdefault(is_audit, task)
            pages.setdefault(is_audit, page)
            if len(payloads) == 2:
                break
            answer = {"product_id": task["product_id"], "category": task["top"][0]["category"]}
            r = client.post("/api/answer", json=answer, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
    audit_task, review_task = payloads[True], payloads[False]
    assert shape(audit_task) == shape(review_task)
    assert audit_task["decision"] == "review"  # never "accept"
    assert "accept" not in json.dumps(audit_task) and "audit" not in json.dumps(audit_task)
    assert len(audit_task["top"]) == len(review_task["top"]) == 5
    assert audit_task["image_url"] == f"/image/{audit_task['product_id']}"
    # the page around the task is the same page: only the CSRF token differs between visits
    strip = [csrf_of(p) for p in pages.values()]
    assert pages[True].replace(strip[0], "") == pages[False].replace(strip[1], "")
    assert "audit" not in pages[True].lower()


# -- the figures ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n"), [(0, 1), (1, 1), (0, 10), (7, 10), (10, 10), (196, 200), (995, 1000)]
)
def test_the_interval_is_clopper_pearson(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert proportion_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    with pytest.raises(ValueError, match="expected 0 <= k <= n"):
        proportion_interval(3, 2)


def test_review_stats_reports_the_audited_accuracy(
    tmp_path: Path, lenient, sample_catalogue: Catalogue
) -> None:
    path = tmp_path / "desk.db"
    db = queued_db(path, lenient, sample_catalogue, 0.25, seed=4)
    model, _ = lenient
    labels = truth(sample_catalogue)
    audits = sorted(audit_ids(db))
    answered = audits[: len(audits) - 5]  # five audits still wait
    answer_all(db, {pid: labels[pid] for pid in answered})
    with db.session() as s:
        items = {i.product_id: i for i in s.scalars(select(QueueItem))}
    right = sum(labels[pid] == items[pid].category for pid in answered)
    auto = sum(1 for i in items.values() if i.decision == "accept" and not i.queued)
    assert 0 < right < len(answered)  # the sample's accepted products are not all right

    result = runner.invoke(app, ["review", "stats", "--json", "--db", f"sqlite:///{path}"])
    assert result.exit_code == 0, result.output
    audit = json.loads(result.output)["audit"]
    ci = binomtest(right, len(answered)).proportion_ci(method="exact")
    for row in (audit["overall"], audit["by_model"][model.version]):
        assert (row["n"], row["correct"]) == (len(answered), right)
        assert row["accuracy"] == pytest.approx(right / len(answered))
        assert (row["low"], row["high"]) == pytest.approx((ci.low, ci.high))
        assert row["auto_labelled"] == auto
        assert row["implied_wrong"] == pytest.approx(auto * (1 - right / len(answered)), abs=0.1)
        assert row["implied_wrong_low"] == pytest.approx(auto * (1 - ci.high), abs=0.1)
        assert row["implied_wrong_high"] == pytest.approx(auto * (1 - ci.low), abs=0.1)
    assert audit["waiting"] == 5 and audit["method"] == "clopper-pearson"
    plain = runner.invoke(app, ["review", "stats", "--db", f"sqlite:///{path}"])
    assert plain.exit_code == 0, plain.output
    assert f"{right:,} of {len(answered):,} audits agreed" in plain.output
    assert f"{100 * ci.low:.2f}%" in plain.output

    add_user(db, "boss", "correct horse", "admin")
    with TestClient(create_app(db), follow_redirects=False) as client:
        body = {"name": "boss", "password": "correct horse"}
        body["csrf_token"] = csrf_of(client.get("/login").text)
        assert client.post("/login", data=body).status_code == 303
        page = client.get("/admin").text
    table = page[page.index('<table id="audit">') :]
    table = table[: table.index("</table>")]
    assert model.version in table
    assert f"{100 * right / len(answered):.2f}%" in table
    assert f"{100 * ci.low:.2f}% to {100 * ci.high:.2f}%" in table


# -- retune -----------------------------------------------------------------------------------
def test_retune_raises_the_threshold_when_audits_break_the_promise(
    tmp_path: Path, lenient, sample_catalogue: Catalogue, private_cache_dir: Path
) -> None:
    path = tmp_path / "desk.db"
    db = queued_db(path, lenient, sample_catalogue, 1.0, seed=5)  # every accepted one audited
    model, _ = lenient
    labels = truth(sample_catalogue)
    answer_all(db, {pid: labels[pid] for pid in audit_ids(db)})
    outcomes = audit_outcomes(db, model.version)
    target = model.gate.target_accuracy
    _, high = proportion_interval(sum(o.correct for o in outcomes), len(outcomes))
    assert high < target  # what the audits show: the promise is not kept

    out = tmp_path / "retuned"
    result = runner.invoke(
        app, ["retune", str(model.folder), "--db", f"sqlite:///{path}", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "the promise is not kept" in result.output and str(out) in result.output
    new = Model.load(out)
    assert new.version != model.version and new.version == model_version(out)
    source = new.gate.threshold_source
    assert source["from"] == "audits" and source["audits"] == len(outcomes)
    assert source["model_version"] == model.version
    assert source["old_thresholds"]["image+text"] == LENIENT
    chosen = new.gate.accept_thresholds["image+text"]
    assert source["new_thresholds"]["image+text"] == chosen > LENIENT
    assert chosen == audited_threshold(outcomes, target)
    assert chosen in {o.confidence for o in outcomes}  # one of the audited confidences
    kept = [o for o in outcomes if o.confidence >= chosen]
    assert kept and sum(o.correct for o in kept) / len(kept) >= target
    # no lower audited confidence would keep the target
    lower = sorted({o.confidence for o in outcomes if o.confidence < chosen})
    for t in lower[-20:]:
        above = [o for o in outcomes if o.confidence >= t]
        assert sum(o.correct for o in above) / len(above) < target
    # the new model serves: fewer accepted, and what it accepts is what the audits allow
    products = sample_catalogue.products
    preds = new.predict(products, FeatureCache(private_cache_dir))
    accepted = [p for p in preds if p.decision == "accept"]
    assert 0 < len(accepted) < len(kept) + 20
    assert all(p.top[0][1] >= chosen for p in accepted)
    in_memory = new.predict(products[:3])  # the REST API's path: encoders in memory
    assert [p.decision for p in in_memory] == [p.decision for p in preds[:3]]
    # the drift reference no longer compares the decisions retuning moved on purpose
    assert new.reference is not None and model.reference is not None
    assert set(model.reference.decisions) == {"accept", "review", "unknown"}
    assert new.reference.decisions == {"unknown": model.reference.decisions["unknown"]}
    n = 50
    batch = Observations(
        decisions=np.array(["review"] * n, dtype=object),
        confidence=np.full(n, 0.9),
        ood_score=np.zeros(n),
        predicted=np.zeros(n, dtype=int),
        has_photo=np.ones(n, dtype=bool),
        has_title=np.ones(n, dtype=bool),
        photo_side=np.full(n, 80.0),
    )
    shares = set(compare(new.reference, batch).signals)
    assert "unknown_share" in shares and not shares & {"accept_share", "review_share"}
    # the retuned model has no audits of its own yet: nothing to judge
    again = runner.invoke(
        app, ["retune", str(out), "--db", f"sqlite:///{path}", "--out", str(tmp_path / "x")]
    )
    assert again.exit_code == 0 and "no answered audit yet" in again.output
    assert not (tmp_path / "x").exists()
    refused = runner.invoke(
        app, ["retune", str(model.folder), "--db", f"sqlite:///{path}", "--out", str(out)]
    )
    assert refused.exit_code == 2 and "is not empty" in refused.output


def test_retune_changes_nothing_while_the_promise_holds(
    tmp_path: Path, lenient, sample_catalogue: Catalogue
) -> None:
    path = tmp_path / "desk.db"
    db = queued_db(path, lenient, sample_catalogue, 0.1, seed=6)
    model, _ = lenient
    with db.session() as s:
        items = {i.product_id: i.category for i in s.scalars(select(QueueItem))}
    answer_all(db, {pid: items[pid] for pid in audit_ids(db)})  # every audit: the model was right
    out = tmp_path / "retuned"
    result = runner.invoke(
        app, ["retune", str(model.folder), "--db", f"sqlite:///{path}", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    n = len(audit_ids(db))
    assert f"{n:,} of {n:,} audits right" in result.output
    assert "the promise holds, nothing changed" in result.output
    assert not out.exists()
    assert Gate.load(model.folder / "gate").accept_thresholds["image+text"] == LENIENT


def test_the_audited_threshold_on_a_known_answer() -> None:
    def rows(*pairs: tuple[float, bool]) -> list[AuditOutcome]:
        when = datetime(2026, 1, 1)
        return [
            AuditOutcome(str(i), "v", "image+text", c, ok, when) for i, (c, ok) in enumerate(pairs)
        ]

    audits = rows((0.99, True), (0.98, True), (0.97, False), (0.95, True), (0.9, False))
    # at and above: 0.99 1/1, 0.98 2/2, 0.97 2/3, 0.95 3/4, 0.90 3/5
    assert audited_threshold(audits, 0.75) == 0.95
    assert audited_threshold(audits, 0.8) == 0.98
    assert audited_threshold(audits, 0.5) == 0.9
    # tied confidences count together: 0.98 holds one right and one wrong answer
    assert audited_threshold(rows((0.99, True), (0.98, True), (0.98, False)), 0.9) == 0.99
    # even the most confident audit was wrong: above every audited confidence
    top_wrong = audited_threshold(rows((0.99, False), (0.9, True)), 0.9)
    assert 0.99 < top_wrong < 0.99 + 1e-12


def test_the_threshold_source_defaults_to_training(sample_model_dir: Path, tmp_path: Path) -> None:
    gate = Gate.load(sample_model_dir / "gate")
    assert gate.threshold_source == {"from": "training"}
    saved = json.loads((sample_model_dir / "gate" / "gate.json").read_text())
    assert saved["threshold_source"] == {"from": "training"}
    # a gate.json written before the field existed reads as chosen at training
    old = tmp_path / "gate"
    old.mkdir()
    del saved["threshold_source"]
    (old / "gate.json").write_text(json.dumps({**saved, "ood": None}))
    assert Gate.load(old).threshold_source == {"from": "training"}


# -- an existing database ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_of_the_first_schema_upgrades(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_url"), "desk_upgrade")
    config = Config()
    config.set_main_option("script_location", str(Path(review.__file__).parent / "migrations"))
    config.attributes["url"] = normalise_url(url)
    command.upgrade(config, "0001")
    old = Database(url, run_migrations=False)
    insert = text(
        "INSERT INTO items (product_id, title, decision, queued, category, probability, top_json,"
        " model_version, created_at, updated_at) VALUES (:pid, 't', 'review', :queued, 'A > B',"
        " :p, '[[\"A > B\", 0.5]]', 'v1', :when, :when)"
    )
    with old.engine.begin() as conn:
        for pid, p in (("a", 0.7), ("b", 0.4)):
            conn.execute(insert, {"pid": pid, "p": p, "queued": True, "when": datetime(2026, 1, 1)})
    old.dispose()
    db = Database(url)  # migrates to the newest schema
    with db.session() as s:
        items = {i.product_id: i for i in s.scalars(select(QueueItem))}
    assert {k: (i.priority, i.audit, i.gate_case) for k, i in items.items()} == {
        "a": (0.7, False, None),
        "b": (0.4, False, None),
    }
    ana = add_user(db, "ana", "correct horse", "reviewer")
    assert review.next_task(db, ana).product_id == "b"  # the least sure first, as before
    assert audit_summary(db)["overall"]["n"] == 0
    db.dispose()
