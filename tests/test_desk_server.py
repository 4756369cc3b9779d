"""The desk as a real server process (`prodcat review`), on SQLite and on a real PostgreSQL:
anonymous access refused everywhere, CSRF, photos by id only, concurrent reviewers, kill -9."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from desk_support import DeskServer, Reviewer, create_database, csrf_of
from prodcat.catalogue import Catalogue
from prodcat.desk.app import create_app
from prodcat.desk.auth import add_user
from prodcat.desk.db import Database, QueueItem, ReviewAnswer
from prodcat.desk.queue import record_predictions

PASSWORD = "correct horse battery"
REVIEWERS = [f"rev{n}" for n in range(6)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def desk(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    desk_predictions,
    sample_catalogue: Catalogue,
) -> Iterator[tuple[DeskServer, Database]]:
    """One queued database and one server process per backend, shared by the module."""
    folder = tmp_path_factory.mktemp(f"desk-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'desk.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_url"), "desk_server")
    db = Database(url)
    _, preds = desk_predictions
    record_predictions(db, sample_catalogue.products, preds, "sample@v1")
    for name in REVIEWERS:
        add_user(db, name, PASSWORD, "reviewer")
    add_user(db, "boss", PASSWORD, "admin")
    server = DeskServer(url, folder / "server.log").start()
    yield server, db
    server.stop()
    db.dispose()


def test_every_route_refuses_anonymous_visitors(desk) -> None:
    server, db = desk
    routes = [r for r in create_app(db).routes if isinstance(r, APIRoute)]
    checked = 0
    with httpx.Client(base_url=server.url, follow_redirects=False) as anon:
        some_id = db_one_queued(db)
        for route in routes:
            if route.path == "/login":
                continue
            path = route.path.replace("{product_id}", some_id)
            for method in route.methods:
                r = anon.request(method, path)
                if method == "GET" and not path.startswith(("/api/", "/image/")):
                    assert r.status_code == 303, (method, path, r.status_code)
                    assert r.headers["location"].startswith("/login"), (method, path)
                else:
                    assert r.status_code in (401, 403), (method, path, r.status_code)
                assert some_id not in r.text or r.status_code == 303
                checked += 1
    assert checked >= 10
    page = httpx.get(server.url + "/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    assert httpx.get(server.url + "/static/desk.css").status_code == 200


def db_one_queued(db: Database) -> str:
    with db.session() as s:
        return s.scalar(select(QueueItem.product_id).where(QueueItem.queued).limit(1))


def test_session_cookie_is_httponly_and_samesite(desk) -> None:
    server, _ = desk
    r = httpx.get(server.url + "/login")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_login_rejects_a_wrong_password_and_a_missing_token(desk) -> None:
    server, _ = desk
    with httpx.Client(base_url=server.url) as c:
        page = c.get("/login")
        token = csrf_of(page.text)
        wrong = c.post("/login", data={"name": "rev0", "password": "nope", "csrf_token": token})
        assert wrong.status_code == 401 and "wrong name or password" in wrong.text
        no_token = c.post("/login", data={"name": "rev0", "password": PASSWORD})
        assert no_token.status_code == 403


def test_csrf_rejected_without_the_token(desk) -> None:
    server, db = desk
    rev = Reviewer(server.url, "rev5", PASSWORD)
    task = rev.next()
    body = {"product_id": task["product_id"], "category": task["top"][0]["category"]}
    assert rev.client.post("/api/answer", json=body).status_code == 403
    bad = rev.client.post("/api/answer", json=body, headers={"X-CSRF-Token": "forged"})
    assert bad.status_code == 403
    for path in ("/api/undo", "/api/skip", "/logout"):
        assert rev.client.post(path, json={"product_id": task["product_id"]}).status_code == 403
    with db.session() as s:
        assert s.scalar(select(ReviewAnswer).where(ReviewAnswer.reviewer == "rev5")) is None
    ok = rev.answer(task["product_id"], task["top"][0]["category"])
    assert ok.status_code == 200 and ok.json()["agreed"] is True
    assert rev.post("/api/undo").json()["task"]["product_id"] == task["product_id"]
    rev.close()


def test_a_proposed_category_cannot_inject_markup(desk) -> None:
    server, _ = desk
    rev = Reviewer(server.url, "rev5", PASSWORD)
    task = rev.next()
    evil = "Other > x</script<img src=x onerror=alert(1)"
    body = {"product_id": task["product_id"], "category": evil, "new_category": True}
    assert rev.post("/api/answer", body).status_code == 200
    page = rev.client.get("/desk").text
    assert "x</script" not in page and "<img src=x" not in page
    assert "x\\u003c/script\\u003cimg src=x onerror=alert(1)" in page
    assert rev.post("/api/undo").json()["task"]["product_id"] == task["product_id"]
    rev.close()


def test_photos_are_served_by_product_id_only(desk, sample_catalogue: Catalogue) -> None:
    server, db = desk
    rev = Reviewer(server.url, "rev4", PASSWORD)
    pid = db_one_queued(db)
    photo = rev.client.get(f"/image/{pid}")
    assert photo.status_code == 200
    assert photo.content == sample_catalogue.by_id()[pid].image.read_bytes()
    for evil in ("/image/..%2F..%2F..%2Fetc%2Fpasswd", "/image/%2Fetc%2Fpasswd", "/image/nope"):
        r = rev.client.get(evil)
        assert r.status_code == 404 and "root:" not in r.text
    assert rev.client.get("/static/..%2F..%2Fdb.py").status_code == 404
    assert rev.client.get("/admin").status_code == 403  # reviewers are not admins
    rev.close()


def test_concurrent_reviewers_never_get_the_same_product(desk) -> None:
    server, db = desk
    per_reviewer = 8
    seen: dict[str, list[str]] = {}
    failures: list[str] = []

    def work(name: str) -> None:
        rev = Reviewer(server.url, name, PASSWORD)
        got = seen.setdefault(name, [])
        try:
            for _ in range(per_reviewer):
                task = rev.next()
                got.append(task["product_id"])
                r = rev.answer(task["product_id"], task["top"][0]["category"])
                if r.status_code != 200:
                    failures.append(f"{name}: {r.status_code} {r.text}")
        finally:
            rev.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in REVIEWERS[:4]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    handed = [pid for got in seen.values() for pid in got]
    assert len(handed) == 4 * per_reviewer
    assert len(set(handed)) == len(handed), "two reviewers got the same product"
    with db.session() as s:
        answers = list(
            s.scalars(select(ReviewAnswer).where(ReviewAnswer.reviewer.in_(REVIEWERS[:4])))
        )
    assert sorted(a.product_id for a in answers) == sorted(handed)


def test_kill_9_loses_no_acknowledged_answer(desk) -> None:
    server, db = desk
    rev = Reviewer(server.url, "rev4", PASSWORD)
    acknowledged = {}
    for n in range(6):
        task = rev.next()
        category = task["top"][n % 3]["category"]
        r = rev.answer(task["product_id"], category)
        assert r.status_code == 200
        acknowledged[task["product_id"]] = category
    server.kill9()  # no shutdown, no flush: the process just disappears
    server.start()
    with db.session() as s:
        rows = s.scalars(select(ReviewAnswer).where(ReviewAnswer.reviewer == "rev4"))
        stored = {a.product_id: a.category for a in rows}
    assert stored == acknowledged
    # the same browser session still works after the restart (the key lives in the database)
    assert rev.next()["product_id"] not in acknowledged
    rev.close()


def test_admin_sees_progress_and_sets_overlap(desk) -> None:
    server, _ = desk
    boss = Reviewer(server.url, "boss", PASSWORD)
    page = boss.client.get("/admin")
    assert page.status_code == 200 and "model vs reviewer" in page.text
    progress = boss.client.get("/api/progress").json()
    assert progress["answers"] >= 4 * 8 + 6
    assert progress["done"] + progress["left"] == progress["queued"]
    assert progress["per_reviewer"]["rev4"] == 6
    r = boss.client.post(
        "/admin/settings",
        data={"answers_per_product": "2", "lease_minutes": "5", "csrf_token": boss.csrf},
    )
    assert r.status_code == 303
    assert boss.client.get("/api/progress").json()["answers_per_product"] == 2
    assert boss.post("/admin/settings").status_code == 422  # no form fields: refused
    assert boss.client.get("/api/progress").json()["answers_per_product"] == 2
    r = boss.client.post(
        "/admin/settings",
        data={"answers_per_product": "1", "lease_minutes": "10", "csrf_token": boss.csrf},
    )
    assert r.status_code == 303
    boss.close()
