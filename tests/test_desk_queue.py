"""The desk's library on a real SQLite file: queue building, leases, answers, undo, overlap,
agreement, labels CSV and Label Studio round trips."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from desk_support import csrf_of
from prodcat.catalogue import Catalogue
from prodcat.catalogue.extra_labels import apply_extra_labels, read_labels_csv
from prodcat.desk import review, stats
from prodcat.desk.app import create_app
from prodcat.desk.auth import AuthError, add_user, authenticate
from prodcat.desk.db import Database, Lease, QueueItem, ReviewAnswer
from prodcat.desk.exchange import export_labels
from prodcat.desk.labelstudio import (
    Images,
    import_labelstudio,
    labelstudio_config,
    labelstudio_tasks,
)
from prodcat.desk.queue import build_queue, record_predictions, taxonomy
from prodcat.model.bundle import model_version


@pytest.fixture
def db(tmp_path: Path, desk_predictions, sample_catalogue: Catalogue) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'desk.db'}")
    _model, preds = desk_predictions
    record_predictions(database, sample_catalogue.products, preds, "sample@v1")
    return database


def users(db: Database, *names: str):
    return [add_user(db, name, "correct horse", "reviewer") for name in names]


def test_queue_holds_review_and_unknown_and_rerun_adds_nothing(
    db: Database, desk_predictions, sample_catalogue: Catalogue
) -> None:
    _, preds = desk_predictions
    decisions = Counter(p.decision for p in preds)
    with db.session() as s:
        items = list(s.scalars(select(QueueItem)))
    assert len(items) == len(sample_catalogue.products)
    queued = [i for i in items if i.queued]
    assert len(queued) == decisions["review"] + decisions["unknown"] > 0
    assert {i.decision for i in queued} <= {"review", "unknown"}
    first = next(i for i in queued)
    pred = next(p for p in preds if p.id == first.product_id)
    assert json.loads(first.top_json) == [[c, round(p, 6)] for c, p in pred.top]
    assert len(json.loads(first.top_json)) == 5

    again = record_predictions(db, sample_catalogue.products, preds, "sample@v1")
    assert (again.added, again.rescored, again.unchanged) == (0, 0, len(preds))
    with db.session() as s:
        assert len(list(s.scalars(select(QueueItem)))) == len(sample_catalogue.products)


def test_a_new_model_rescores_only_unanswered_products(
    db: Database, desk_predictions, sample_catalogue: Catalogue
) -> None:
    (alice,) = users(db, "alice")
    task = review.next_task(db, alice)
    assert task is not None
    review.answer(db, alice, task.product_id, task.top[1][0])
    _, preds = desk_predictions
    result = record_predictions(db, sample_catalogue.products, preds, "sample@v2")
    assert result.unchanged == 1 and result.rescored == len(preds) - 1
    with db.session() as s:
        assert s.get(QueueItem, task.product_id).model_version == "sample@v1"  # answered: kept
        assert {i.model_version for i in s.scalars(select(QueueItem))} == {"sample@v1", "sample@v2"}


def test_most_uncertain_first_and_leases_keep_reviewers_apart(db: Database) -> None:
    alice, bob = users(db, "alice", "bob")
    a, b = review.next_task(db, alice), review.next_task(db, bob)
    assert a and b and a.product_id != b.product_id
    assert a.top[0][1] <= b.top[0][1]  # alice asked first and got the least sure product
    with db.session() as s:
        lowest = s.scalar(
            select(QueueItem).where(QueueItem.queued).order_by(QueueItem.probability).limit(1)
        )
    assert lowest.product_id == a.product_id
    # asking again returns the product held, not a new one
    assert review.next_task(db, alice).product_id == a.product_id
    # bob cannot answer alice's leased single-answer product
    with pytest.raises(review.ReviewError, match="all the answers it needs"):
        review.answer(db, bob, a.product_id, a.top[0][0])
    # once the lease expires, bob may have it
    with db.session() as s, s.begin():
        s.execute(update(Lease).values(expires_at=Lease.expires_at - timedelta(hours=1)))
    review.answer(db, bob, a.product_id, a.top[0][0])
    assert review.next_task(db, alice).product_id != a.product_id


def test_answer_skip_undo(db: Database) -> None:
    (alice,) = users(db, "alice")
    first = review.next_task(db, alice)
    saved = review.answer(db, alice, first.product_id, first.top[0][0])
    assert saved.agreed and saved.model_suggestion == first.top[0][0]
    with pytest.raises(review.ReviewError, match="answered it already"):
        review.answer(db, alice, first.product_id, first.top[1][0])
    second = review.next_task(db, alice)
    assert second.product_id != first.product_id
    review.skip(db, alice, second.product_id)
    third = review.next_task(db, alice)
    assert third.product_id not in (first.product_id, second.product_id)
    back = review.undo(db, alice)
    assert back.product_id == first.product_id
    with db.session() as s:
        assert (
            s.scalar(select(ReviewAnswer).where(ReviewAnswer.product_id == first.product_id))
            is None
        )
    assert review.next_task(db, alice).product_id == first.product_id
    new = review.answer(
        db, alice, first.product_id, "Footwear > Shoes > Moon Boots", new_category=True
    )
    assert not new.agreed and new.new_category
    assert "Footwear > Shoes > Moon Boots" in taxonomy(db)


def test_two_answers_per_product_and_agreement(db: Database) -> None:
    review.set_answers_per_product(db, 2)
    alice, bob, carol = users(db, "alice", "bob", "carol")
    a = review.next_task(db, alice)
    b = review.next_task(db, bob)
    assert a.product_id == b.product_id  # overlap: the same product goes to two people
    c = review.next_task(db, carol)
    assert c.product_id != a.product_id  # but not to a third
    review.answer(db, alice, a.product_id, a.top[0][0])
    review.answer(db, bob, a.product_id, a.top[1][0])
    review.answer(db, carol, c.product_id, c.top[0][0])
    p = stats.progress(db)
    assert p["done"] == 1 and p["answers"] == 3
    assert p["per_reviewer"] == {"alice": 1, "bob": 1, "carol": 1}
    assert p["agreement"]["model_vs_reviewer"] == pytest.approx(2 / 3)
    assert p["agreement"]["reviewer_vs_reviewer"] == 0.0
    assert p["agreement"]["reviewer_vs_reviewer_n"] == 1
    suggested = a.top[0][0]
    assert p["per_class"][suggested]["done"] >= 1
    with pytest.raises(review.ReviewError):
        review.set_answers_per_product(db, 3)


def test_passwords_are_hashed_and_checked(db: Database) -> None:
    add_user(db, "dora", "a long secret", "admin")
    with db.session() as s:
        from prodcat.desk.db import User

        stored = s.scalar(select(User).where(User.name == "dora")).password_hash
    assert stored.startswith("$argon2") and "a long secret" not in stored
    assert authenticate(db, "dora", "a long secret") is not None
    assert authenticate(db, "dora", "a long secreT") is None
    assert authenticate(db, "nobody", "a long secret") is None
    with pytest.raises(AuthError, match="at least 8"):
        add_user(db, "eve", "short")
    with pytest.raises(AuthError, match="role"):
        add_user(db, "eve", "long enough", "owner")


def test_labels_csv_round_trip_and_extra_labels(
    db: Database, tmp_path: Path, sample_catalogue: Catalogue
) -> None:
    alice, bob = users(db, "alice", "bob")
    chosen = {}
    for user in (alice, bob):
        for _ in range(3):
            t = review.next_task(db, user)
            chosen[t.product_id] = t.top[2][0]
            review.answer(db, user, t.product_id, t.top[2][0])
    out = tmp_path / "labels.csv"
    assert export_labels(db, out) == 6
    header = out.read_text().splitlines()[0]
    assert header == "id,category,reviewer,time,model_suggestion,agreed,new_category"
    extra = read_labels_csv(out)
    assert {pid: " > ".join(p) for pid, p in extra.labels.items()} == chosen
    relabelled, unknown = apply_extra_labels(sample_catalogue, extra)
    assert unknown == []
    by_id = relabelled.by_id()
    for pid, category in chosen.items():
        assert " > ".join(by_id[pid].label) == category
    assert sample_catalogue.by_id()[pid].label != by_id[pid].label  # the original is untouched


def test_extra_labels_report_bad_rows_and_unknown_ids(tmp_path: Path, sample_catalogue) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("id,category\n3221,Footwear > Shoes\n,Apparel\n3226,A >> B\nnope,Apparel\n")
    extra = read_labels_csv(path)
    assert extra.labels == {"3221": ("Footwear", "Shoes"), "nope": ("Apparel",)}
    assert len(extra.problems) == 2 and ":3:" in extra.problems[0] and ":4:" in extra.problems[1]
    _, unknown = apply_extra_labels(sample_catalogue, extra)
    assert unknown == ["nope"]
    (tmp_path / "bad.csv").write_text("product,label\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_labels_csv(tmp_path / "bad.csv")


def test_label_studio_round_trip(
    db: Database, tmp_path: Path, desk_predictions, sample_catalogue: Catalogue
) -> None:
    # the flat interface with the prediction pre-selected; more in tests/test_labelstudio*.py
    as_desk = Images("url", template="/image/{id}")
    tasks = labelstudio_tasks(db, as_desk, kind="choices", preselect=True).tasks
    with db.session() as s:
        n_queued = len(list(s.scalars(select(QueueItem).where(QueueItem.queued))))
    assert len(tasks) == n_queued
    first = tasks[0]
    assert first["predictions"][0]["model_version"] == "sample@v1"
    assert 0 < first["predictions"][0]["score"] < 1
    assert first["data"]["image"] == f"/image/{first['data']['product_id']}"
    assert '<Choices name="category" toName="image"' in labelstudio_config(taxonomy(db), "choices")

    # what Label Studio exports after two annotators worked: the tasks plus annotations
    exported = []
    for n, task in enumerate(tasks[:4]):
        choice = task["data"]["suggestions"][n % 2]
        exported.append(
            {
                **task,
                "id": 100 + n,
                "annotations": [
                    {
                        "completed_by": {"email": f"ann{n % 2}@example.org"},
                        "created_at": "2026-01-02T03:04:05.000000Z",
                        "result": [
                            {
                                "from_name": "category",
                                "to_name": "image",
                                "type": "choices",
                                "value": {"choices": [choice]},
                            }
                        ],
                    }
                ],
            }
        )
    exported.append({"data": {"title": "no id"}, "annotations": []})
    path = tmp_path / "ls-export.json"
    path.write_text(json.dumps(exported))

    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    _, preds = desk_predictions
    record_predictions(other, sample_catalogue.products, preds, "sample@v1")
    result = import_labelstudio(other, path)
    assert (result.added, result.already) == (4, 0)
    assert result.problems == ["record 5 of the export: data.product_id is missing"]
    assert import_labelstudio(other, path).already == 4  # idempotent
    out = tmp_path / "labels.csv"
    export_labels(other, out)
    labels = read_labels_csv(out).labels
    for n, task in enumerate(tasks[:4]):
        expected = task["data"]["suggestions"][n % 2]
        assert " > ".join(labels[task["data"]["product_id"]]) == expected
    rows = out.read_text().splitlines()[1:]
    assert all(",labelstudio:ann" in r and "2026-01-02T03:04:05Z" in r for r in rows)


def _header(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return page.text[page.text.index("<header>") : page.text.index("</header>")]


def test_the_desk_header_names_the_model_that_queued(
    tmp_path: Path, desk_predictions, sample_catalogue: Catalogue, sample_model_dir: Path
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'desk.db'}")
    add_user(db, "ana", "correct horse", "admin")
    with TestClient(create_app(db), follow_redirects=False) as client:
        login = client.get("/login").text
        body = {"name": "ana", "password": "correct horse", "csrf_token": csrf_of(login)}
        assert client.post("/login", data=body).status_code == 303
        assert "no model has queued products yet" in _header(client, "/desk")
        model, _ = desk_predictions
        build_queue(db, model, sample_catalogue.products[:12])
        version = model_version(sample_model_dir)
        for path in ("/desk", "/admin"):
            header = " ".join(_header(client, path).split())
            assert f"model <b>{sample_model_dir.name}</b> ({model.head_kind})" in header
            assert f"version <code>{version}</code>" in header
        script = client.get("/static/desk.js").text
        assert "unknown kind" not in script and "decision: unknown (" in script
    db.dispose()
