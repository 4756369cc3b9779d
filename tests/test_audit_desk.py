"""`prodcat audit --to-desk`: suspects become "check this label" tasks, and the answers come back
through `prodcat review export` into `prodcat train --extra-labels`, where they override the
catalogue's labels (issue 16)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prodcat.catalogue import Catalogue, load_catalogue
from prodcat.catalogue.extra_labels import apply_extra_labels, read_labels_csv
from prodcat.cli import app
from prodcat.desk import review
from prodcat.desk.auth import add_user
from prodcat.desk.db import Database, QueueItem
from prodcat.desk.labelstudio import labelstudio_tasks
from prodcat.taxonomy.tree import format_path

# Products of big classes given a sibling's label: the audit must catch each one.
PLANTED = {"Shirts": "Apparel > Topwear > Tshirts", "Casual Shoes": "Footwear > Shoes > Heels"}


@pytest.fixture(scope="module")
def audited(
    tmp_path_factory: pytest.TempPathFactory, sample_catalogue: Catalogue, private_cache_dir: Path
):
    """The sample with one label flipped per PLANTED class, audited once with --to-desk."""
    folder = tmp_path_factory.mktemp("audit-desk")
    flipped: dict[str, str] = {}
    products = []
    for p in sample_catalogue.products:
        leaf = p.label[-1] if p.label else ""
        if leaf in PLANTED and leaf not in {v for v in flipped.values()}:
            flipped[p.id] = leaf
            p = replace(p, label=tuple(PLANTED[leaf].split(" > ")))
        products.append(p)
    table = folder / "products.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title", "image", "category"])
        writer.writerows([p.id, p.text, str(p.image), format_path(p.label or ())] for p in products)
    db_url = f"sqlite:///{folder / 'desk.db'}"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(table),
            "--json",
            str(folder / "audit.json"),
            "--report",
            str(folder / "report"),
            "--to-desk",
            "--db",
            db_url,
            "--cache-dir",
            str(private_cache_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    truth = {
        pid: next(format_path(p.label or ()) for p in sample_catalogue.products if p.id == pid)
        for pid in flipped
    }
    return folder, table, db_url, truth, result.output


def test_suspects_are_queued_as_unmarked_label_checks(audited) -> None:
    folder, _, db_url, truth, output = audited
    data = json.loads((folder / "audit.json").read_text())
    assert set(truth) <= {i["id"] for i in data["issues"]}
    assert f"{data['n_issues']:,} label checks added" in output
    db = Database(db_url)
    with db.session() as s:
        items = {i.product_id: i for i in s.query(QueueItem)}
    assert len(items) == data["n_issues"]
    for issue in data["issues"]:
        item = items[issue["id"]]
        assert item.decision == "check" and item.queued and not item.audit
        assert item.given_category == issue["given"] and item.category == issue["suggested"]
    reviewer = add_user(db, "rita", "correct horse battery", "reviewer")
    task = review.next_task(db, reviewer)
    assert task is not None
    shown = task.as_dict()
    assert shown["decision"] == "check"
    options = [o["category"] for o in shown["top"]]
    given = items[task.product_id].given_category
    # The given category is among the options, unmarked: no probability, names in sorted order.
    assert given in options and options == sorted(options) and len(options) == 2
    assert all(o["probability"] is None for o in shown["top"])
    # Label Studio gets no prediction that would preselect an option, even with --preselect,
    # and no percentages beside the options.
    tasks = labelstudio_tasks(db, preselect=True).tasks
    exported = {t["data"]["product_id"]: t for t in tasks}
    assert "predictions" not in exported[task.product_id]
    assert "%" not in exported[task.product_id]["data"]["suggestions_text"]
    assert given in exported[task.product_id]["data"]["suggestions"]


def test_the_report_shows_suspects_overlap_and_duplicates(audited) -> None:
    folder, *_ = audited
    page = (folder / "report" / "index.html").read_text()
    for heading in (
        "Labels that are probably wrong",
        "Classes that overlap",
        "Duplicates that disagree",
    ):
        assert heading in page
    assert page.count('class="photo"') >= 2  # the suspects' photos, embedded
    assert "label audit" in page and "<script" not in page


def test_answers_round_trip_through_export_into_training(
    audited, private_cache_dir: Path, tmp_path: Path
) -> None:
    _, table, db_url, truth, _ = audited
    db = Database(db_url)
    reviewer = add_user(db, "rita", "correct horse battery", "reviewer")  # holds a lease
    answered: dict[str, str] = {}
    while (task := review.next_task(db, reviewer)) is not None:
        # The reviewer restores the planted products' true class and keeps every other label.
        with db.session() as s:
            given = s.get(QueueItem, task.product_id).given_category
        choice = truth.get(task.product_id, given)
        review.answer(db, reviewer, task.product_id, choice)
        answered[task.product_id] = choice
    assert set(truth) <= set(answered)
    runner = CliRunner()
    labels = tmp_path / "labels.csv"
    result = runner.invoke(app, ["review", "export", "--out", str(labels), "--db", db_url])
    assert result.exit_code == 0, result.output
    # The corrected labels override the catalogue's.
    catalogue = load_catalogue(table)
    relabelled, unknown = apply_extra_labels(catalogue, read_labels_csv(labels))
    assert unknown == []
    by_id = {p.id: format_path(p.label or ()) for p in relabelled.products}
    assert all(by_id[pid] == true for pid, true in truth.items())
    assert all(by_id[pid] == choice for pid, choice in answered.items())
    result = runner.invoke(
        app,
        [
            "train",
            str(table),
            "--out",
            str(tmp_path / "model"),
            "--model",
            "text-linear",
            "--calibration-folds",
            "0",
            "--extra-labels",
            str(labels),
            "--cache-dir",
            str(private_cache_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"extra labels: {len(answered):,} products relabelled" in result.output


def test_a_database_of_the_previous_schema_gets_the_given_category(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from prodcat.desk.db import normalise_url

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(Path(review.__file__).parent / "migrations"))
    config.attributes["url"] = normalise_url(url)
    command.upgrade(config, "0002")
    old = Database(url, run_migrations=False)
    with old.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO items (product_id, title, decision, queued, category, probability,"
                " priority, audit, top_json, model_version, created_at, updated_at) VALUES"
                " ('a', 't', 'review', 1, 'A > B', 0.5, 0.5, 0, '[[\"A > B\", 0.5]]', 'v1',"
                " '2026-01-01', '2026-01-01')"
            )
        )
    old.dispose()
    db = Database(url)  # migrates to the newest schema
    with db.session() as s:
        item = s.get(QueueItem, "a")
        assert item is not None and item.given_category is None and item.decision == "review"
    task = review.next_task(db, add_user(db, "ana", "correct horse", "reviewer"))
    assert task is not None and task.top == [("A > B", 0.5)]  # a review task is as before
    db.dispose()
