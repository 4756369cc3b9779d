"""The desk in a real browser: Playwright driving Debian's headless chromium against a real
`prodcat review` server on the bundled sample. Saves docs/desk.md's screenshots to docs/images/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from desk_support import DeskServer
from prodcat.catalogue import Catalogue
from prodcat.desk.auth import add_user
from prodcat.desk.db import Database, ReviewAnswer
from prodcat.desk.queue import add_to_taxonomy, record_model, record_predictions

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "images"
PASSWORD = "correct horse battery"

if not CHROMIUM.exists():
    pytest.skip(
        f"no browser at {CHROMIUM}: apt-get install chromium (the CI script does)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def desk(
    tmp_path_factory: pytest.TempPathFactory, desk_predictions, sample_catalogue: Catalogue
) -> Iterator[tuple[DeskServer, Database]]:
    folder = tmp_path_factory.mktemp("desk-browser")
    db = Database(f"sqlite:///{folder / 'desk.db'}")
    model, preds = desk_predictions
    record_predictions(db, sample_catalogue.products, preds, model.version)
    record_model(db, model)
    add_to_taxonomy(db, model.classes)
    add_user(db, "alice", PASSWORD, "reviewer")
    add_user(db, "boss", PASSWORD, "admin")
    server = DeskServer(db.url, folder / "server.log").start()
    yield server, db
    server.stop()
    db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


def log_in(page, url: str, name: str) -> None:
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#login")


def test_anonymous_visit_goes_to_login(desk, browser) -> None:
    server, _ = desk
    page = browser.new_page()
    page.goto(server.url + "/desk")
    assert re.search(r"/login\?next=/desk$", page.url)
    assert page.locator("#password").is_visible()
    page.close()


def test_review_by_keyboard_search_undo_and_log_out(desk, browser, desk_predictions) -> None:
    server, db = desk
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + "/desk")
    log_in(page, server.url, "alice")
    page.wait_for_url(server.url + "/desk")
    model, _ = desk_predictions
    header = page.inner_text("#model")
    assert f"model {model.folder.name} ({model.head_kind})" in header
    assert f"version {model.version}" in header and "unknown kind" not in page.content()

    answered: dict[str, str] = {}
    for n, key in enumerate(["1", "1", "2", "3"]):
        pid = current_product(page)
        category = (
            page.locator("#suggestions button").nth(int(key) - 1).get_attribute("data-category")
        )
        page.keyboard.press(key)
        sync_api.expect(page.locator("#ack")).to_contain_text(f"Saved: {pid} ")
        answered[pid] = category
        assert current_product(page) not in answered, f"product {n} shown again"

    # the fifth by searching the taxonomy: "/" focuses, typing filters, Enter confirms
    pid = current_product(page)
    page.keyboard.press("/")
    sync_api.expect(page.locator("#search")).to_be_focused()
    page.keyboard.type("wallet")
    results = page.locator("#results li:not(.new)")
    results.first.wait_for()
    paths = results.all_inner_texts()
    assert paths and all("wallet" in p.lower() for p in paths)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "desk.png"))
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#ack")).to_contain_text(f"Saved: {pid} ")
    answered[pid] = paths[0]
    assert stored_answers(db, "alice") == answered

    # undo: the last answer is withdrawn and its product is back on screen
    page.keyboard.press("u")
    sync_api.expect(page.locator("#ack")).to_contain_text(f"Undone: {pid} ")
    assert current_product(page) == pid
    del answered[pid]
    assert stored_answers(db, "alice") == answered

    page.click("#logout")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(server.url + "/desk")
    assert "/login" in page.url
    page.close()


def test_admin_page_shows_progress(desk, browser) -> None:
    server, db = desk
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/admin")
    log_in(page, server.url, "boss")
    page.wait_for_url(server.url + "/admin")
    n = len(stored_answers(db, "alice"))
    assert page.locator("#per-reviewer").inner_text().split("\n")[1].split() == ["alice", str(n)]
    assert int(page.inner_text("#done")) == n
    page.screenshot(path=str(SCREENSHOTS / "admin.png"), full_page=False)
    page.close()


def current_product(page) -> str:
    sync_api.expect(page.locator("#pid")).to_contain_text("product ")
    return page.inner_text("#pid").removeprefix("product ").strip()


def stored_answers(db: Database, reviewer: str) -> dict[str, str]:
    with db.session() as s:
        rows = s.scalars(select(ReviewAnswer).where(ReviewAnswer.reviewer == reviewer))
        return {a.product_id: a.category for a in rows}
