"""Label Studio exchange without a server: the interface XML, tasks (open only, once, photos
that display), and imports of JSON / JSON_MIN exports shaped as Label Studio 1.23 writes them
(tests/test_labelstudio_server.py runs the same round trip against a real server)."""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from desk_support import create_database
from labelstudio_support import queued_desk
from prodcat.catalogue import Catalogue
from prodcat.catalogue.extra_labels import read_labels_csv
from prodcat.cli import app
from prodcat.desk import review
from prodcat.desk.auth import add_user
from prodcat.desk.db import Database, LabelStudioAnnotation, QueueItem, ReviewAnswer
from prodcat.desk.exchange import export_labels
from prodcat.desk.labelstudio import (
    Images,
    import_labelstudio,
    labelstudio_config,
    labelstudio_tasks,
)
from prodcat.desk.queue import record_predictions, taxonomy
from prodcat.model.prediction import Prediction

N = 8


@pytest.fixture
def db(tmp_path: Path, sample_catalogue: Catalogue) -> Database:
    return queued_desk(f"sqlite:///{tmp_path / 'desk.db'}", sample_catalogue, N)


def test_the_taxonomy_interface_nests_the_tree_and_the_flat_one_lists_paths() -> None:
    paths = ["Apparel > Topwear > Tshirts", "Apparel > Topwear > Shirts", "Home & Living > Decor"]
    view = ET.fromstring(labelstudio_config(paths))
    taxonomy = view.find("Taxonomy")
    assert taxonomy is not None and taxonomy.get("name") == "category"
    assert taxonomy.get("leafsOnly") == "true" and taxonomy.get("maxUsages") == "1"
    top = {c.get("value"): c for c in taxonomy.findall("Choice")}
    assert sorted(top) == ["Apparel", "Home & Living"]  # escaped in the XML, read back
    topwear = top["Apparel"].find("Choice")
    assert topwear is not None and topwear.get("value") == "Topwear"
    assert sorted(c.get("value") for c in topwear.findall("Choice")) == ["Shirts", "Tshirts"]
    texts = {t.get("name"): t.get("value") for t in view.findall("Text")}
    assert texts == {"title": "$title", "suggestions": "$suggestions_text"}
    assert view.find("TextArea").get("name") == "new_category"  # type: ignore[union-attr]

    flat = ET.fromstring(labelstudio_config(paths, "choices")).find("Choices")
    assert flat is not None and [c.get("value") for c in flat] == paths
    # a category that is also a parent must stay pickable: no leafsOnly then
    inner = ET.fromstring(labelstudio_config(["Apparel", "Apparel > Topwear"])).find("Taxonomy")
    assert inner is not None and inner.get("leafsOnly") is None
    with pytest.raises(ValueError, match="expected one of taxonomy, choices"):
        labelstudio_config(paths, "tree")


def test_export_writes_the_open_queue_once(db: Database, sample_catalogue: Catalogue) -> None:
    first = labelstudio_tasks(db, record=True)
    assert len(first.tasks) == N and first.problems == []
    task = first.tasks[0]
    assert "predictions" not in task  # nothing pre-selected unless asked
    data = task["data"]
    assert data["product_id"] == sample_catalogue.products[0].id
    assert data["suggestions_text"].splitlines()[0] == f"1. {data['suggestions'][0]}  (50%)"
    # exporting again adds nothing: Label Studio has them all
    again = labelstudio_tasks(db, record=True)
    assert (len(again.tasks), again.already, again.changed) == (0, N, [])
    assert len(labelstudio_tasks(db, everything=True).tasks) == N

    # an answered product is not open (overlap 1); a re-scored one is counted as changed
    ana = add_user(db, "ana", "correct horse", "reviewer")
    review.answer(db, ana, data["product_id"], data["suggestions"][0])
    product = sample_catalogue.products[1]
    newer = Prediction(product.id, "Apparel > Topwear > Tshirts", 0.4, [], [("A > B", 0.4)])
    record_predictions(db, [product], [newer], "sample@v2")
    later = labelstudio_tasks(db)
    assert later.tasks == [] and later.changed == [product.id] and later.already == N - 2
    assert len(labelstudio_tasks(db, everything=True).tasks) == N
    review.set_answers_per_product(db, 2)  # two answers wanted: the answered one is open again
    assert labelstudio_tasks(db).already == N - 1


def test_preselect_sends_the_answer_in_the_interfaces_own_type(db: Database) -> None:
    taxonomy_task = labelstudio_tasks(db, preselect=True).tasks[1]
    prediction = taxonomy_task["predictions"][0]
    assert prediction["model_version"] == "sample@ls" and prediction["score"] == 0.5
    (region,) = prediction["result"]
    top = taxonomy_task["data"]["suggestions"][0]
    assert region["type"] == "taxonomy" and region["value"] == {"taxonomy": [top.split(" > ")]}
    flat = labelstudio_tasks(db, kind="choices", preselect=True).tasks[1]
    assert flat["predictions"][0]["result"][0]["value"] == {"choices": [top]}


def _jpeg_side(url: str) -> int:
    assert url.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        assert image.format == "JPEG"
        return max(image.size)


def test_photos_inline_local_files_and_url_templates(
    db: Database, tmp_path: Path, sample_catalogue: Catalogue
) -> None:
    product = sample_catalogue.products[0]
    assert product.image is not None
    photo, pid = product.image.resolve(), product.id
    inline = labelstudio_tasks(db, Images(max_side=40)).tasks[0]["data"]["image"]
    assert _jpeg_side(inline) == 40

    root = photo.parent.parent.parent  # .../data: Label Studio's document root
    local = Images("local-files", root=root)
    assert local.url(pid, str(photo)) == (f"/data/local-files/?d=sample/images/{photo.name}", None)
    setup = local.setup_lines([str(photo.parent)])
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}" in setup[0]
    assert f"absolute local path {root / 'sample'}" in setup[1]

    cdn = Images("url", root=photo.parent, template="https://cdn.example/{path}?id={id}&f={name}")
    assert cdn.url("a b", str(photo)) == (
        f"https://cdn.example/{photo.name}?id=a%20b&f={photo.name}",
        None,
    )
    # outside the root: inlined, and said so; no photo or an unreadable one: said so too
    elsewhere = Images("local-files", root=tmp_path)
    url, why = elsewhere.url(pid, str(photo))
    assert _jpeg_side(url) <= 512 and why is not None and "outside" in why
    assert Images().url(pid, None) == ("", "no photo stored for it: the task shows the title only")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    url, why = Images().url(pid, str(broken))
    assert url == "" and why is not None and "cannot be read" in why
    with pytest.raises(ValueError, match=r"expected fields \{id\}, \{path\} and \{name\}"):
        Images("url", template="https://cdn.example/{sku}")


# -- imports: exports shaped as Label Studio 1.23 writes them ---------------------------------


def _tax(path: str) -> list[dict[str, Any]]:
    value = {"taxonomy": [path.split(" > ")]}
    return [{"from_name": "category", "to_name": "image", "type": "taxonomy", "value": value}]


def _typed(text: str) -> list[dict[str, Any]]:
    value = {"text": [text]}
    return [{"from_name": "new_category", "to_name": "image", "type": "textarea", "value": value}]


def _annotation(aid: int, who: Any, result: list[Any], minute: int, **extra: Any) -> dict:
    stamp = f"2026-03-01T10:{minute:02d}:00.000000Z"
    return {
        "id": aid,
        "completed_by": who,
        "result": result,
        "was_cancelled": False,
        "created_at": "2026-03-01T10:00:00.000000Z",
        "updated_at": stamp,
        "lead_time": 4.5 + aid,
        **extra,
    }


def _export(db: Database, answers: dict[int, list[dict]]) -> list[dict[str, Any]]:
    """A JSON export: task k (Label Studio id 100 + k) carries answers[k]."""
    tasks = labelstudio_tasks(db, Images("url", template="/x/{id}"), everything=True).tasks
    return [
        {"id": 100 + k, "data": tasks[k]["data"], "annotations": answers.get(k, [])}
        for k in range(len(tasks))
    ]


def _answers(db: Database) -> dict[str, list[tuple[str, str, bool]]]:
    with db.session() as s:
        rows = s.scalars(select(ReviewAnswer).order_by(ReviewAnswer.id))
        out: dict[str, list[tuple[str, str, bool]]] = {}
        for a in rows:
            out.setdefault(a.product_id, []).append((a.reviewer, a.category, a.new_category))
        return out


def test_json_import_keeps_edits_skips_overlap_names_and_proposals(db: Database) -> None:
    tasks = _export(db, {})
    sug = [t["data"]["suggestions"] for t in tasks]
    pid = [t["data"]["product_id"] for t in tasks]
    users = {1: "ana@example.org", 2: "bob@example.org"}
    answers = {
        0: [_annotation(1, 1, _tax(sug[0][0]), 1)],  # agrees with the model
        1: [_annotation(2, 2, _tax(sug[1][2]), 1)],  # disagrees
        2: [_annotation(3, 1, _tax("Apparel > Topwear > Capes"), 1)],  # off the list
        3: [_annotation(4, 1, [], 1, was_cancelled=True)],  # skipped
        4: [_annotation(5, 1, _typed("Home > Decor > Vases"), 1)],  # typed as new
        5: [_annotation(6, 1, _tax(sug[5][0]), 1), _annotation(7, 2, _tax(sug[5][1]), 2)],
        6: [_annotation(8, {"id": 9, "email": "cy@example.org"}, _tax(sug[6][0]), 1)],
    }
    first = import_labelstudio(db, _export(db, answers), users)
    assert (first.added, first.replaced, first.skips, first.proposed) == (6, 0, 1, 2)
    # overlap 1: bob's second answer to task 105 stays out, and says where
    assert first.problems == [
        f"Label Studio task 105 (product {pid[5]}): bob@example.org's answer left out: the "
        "product has 1 of the 1 answer(s) the desk's overlap setting asks for"
    ]
    assert (
        f"Label Studio task 102 (product {pid[2]}): 'Apparel > Topwear > Capes' is not in"
        in (first.notes[0])
    )
    got = _answers(db)
    assert got[pid[0]] == [("labelstudio:ana@example.org", sug[0][0], False)]
    assert got[pid[1]] == [("labelstudio:bob@example.org", sug[1][2], False)]
    assert got[pid[2]] == [("labelstudio:ana@example.org", "Apparel > Topwear > Capes", True)]
    assert pid[3] not in got
    assert got[pid[4]] == [("labelstudio:ana@example.org", "Home > Decor > Vases", True)]
    assert got[pid[6]] == [("labelstudio:cy@example.org", sug[6][0], False)]  # snapshot export
    assert "Home > Decor > Vases" in taxonomy(db)  # proposed categories join the desk's list
    with db.session() as s:
        skip = s.get(LabelStudioAnnotation, "4")
        assert skip is not None and skip.skipped and skip.answer_id is None
        assert skip.task_id == 103 and skip.reviewer == "labelstudio:ana@example.org"
        assert s.get(LabelStudioAnnotation, "1").lead_time_s == 5.5  # type: ignore[union-attr]

    # the same export again: nothing changes
    same = import_labelstudio(db, _export(db, answers), users)
    assert (same.added, same.replaced, same.skips, same.already) == (0, 0, 0, 7)
    # an edit after the import replaces the answer; the skipped task answered; two wanted now
    answers[0] = [_annotation(1, 1, _tax(sug[0][3]), 30)]
    answers[3] = [_annotation(4, 1, _tax(sug[3][0]), 30)]
    review.set_answers_per_product(db, 2)
    later = import_labelstudio(db, _export(db, answers), users)
    assert (later.added, later.replaced, later.skips, later.problems) == (2, 1, 0, [])
    assert (
        f"Label Studio task 100 (product {pid[0]}): ana@example.org changed the answer from "
        f"{sug[0][0]!r} to {sug[0][3]!r} (edited 2026-03-01T10:30:00Z): replaced"
    ) in later.notes
    got = _answers(db)
    assert got[pid[0]] == [("labelstudio:ana@example.org", sug[0][3], False)]
    assert got[pid[3]] == [("labelstudio:ana@example.org", sug[3][0], False)]
    assert [r for r, _, _ in got[pid[5]]] == [
        "labelstudio:ana@example.org",
        "labelstudio:bob@example.org",
    ]
    # an older copy of an edited annotation changes nothing
    answers[0] = [_annotation(1, 1, _tax(sug[0][1]), 5)]
    assert import_labelstudio(db, _export(db, answers), users).replaced == 0
    assert _answers(db)[pid[0]][0][1] == sug[0][3]


def test_an_edit_and_a_skip_on_postgresql(
    request: pytest.FixtureRequest, sample_catalogue: Catalogue
) -> None:
    """The same bookkeeping on PostgreSQL: migrated tables, an answer replaced, then withdrawn."""
    url = create_database(request.getfixturevalue("postgres_url"), "labelstudio_import")
    db = queued_desk(url, sample_catalogue, 2)
    tasks = _export(db, {})
    sug = tasks[0]["data"]["suggestions"]
    pid = tasks[0]["data"]["product_id"]
    for minute, category in ((1, sug[0]), (2, sug[1])):
        import_labelstudio(db, _export(db, {0: [_annotation(1, 1, _tax(category), minute)]}))
        assert _answers(db)[pid] == [("labelstudio:1", category, False)]
    skipped = [_annotation(1, 1, [], 3, was_cancelled=True)]
    result = import_labelstudio(db, _export(db, {0: skipped}))
    assert result.skips == 1 and pid not in _answers(db)
    assert "skipped it after answering" in result.notes[0]
    db.dispose()


def test_json_min_export_reads_the_same(db: Database, tmp_path: Path) -> None:
    tasks = _export(db, {})
    pid = [t["data"]["product_id"] for t in tasks]
    sug = [t["data"]["suggestions"] for t in tasks]

    def record(k: int, field: str, value: Any, annotator: Any) -> dict[str, Any]:
        return {
            **tasks[k]["data"],
            "id": 100 + k,
            field: value,
            "annotator": annotator,
            "annotation_id": 50 + k,
            "created_at": "2026-03-01T10:00:00Z",
            "updated_at": "2026-03-01T10:00:00Z",
            "lead_time": 3.0,
        }

    rows = [
        record(0, "category", [{"taxonomy": [sug[0][1].split(" > ")]}], 1),
        record(1, "category", sug[1][0], "bob@example.org"),  # <Choices>: the path as text
        record(2, "new_category", "Home > Decor", 1),
        {**tasks[3]["data"], "id": 103},  # not annotated: listed with its data only
    ]
    path = tmp_path / "min.json"
    path.write_text(json.dumps(rows))
    users = tmp_path / "users.json"  # GET /api/users
    users.write_text(json.dumps([{"id": 1, "email": "ana@example.org", "username": "ana"}]))
    result = CliRunner().invoke(
        app,
        ["review", "import-labelstudio", str(path), "--users", str(users), "--db", db.url],
    )
    assert result.exit_code == 0, result.output
    assert "3 answers imported" in result.output and "1 proposed new categories" in result.output
    got = _answers(db)
    assert got[pid[0]] == [("labelstudio:ana@example.org", sug[0][1], False)]
    assert got[pid[1]] == [("labelstudio:bob@example.org", sug[1][0], False)]
    assert got[pid[2]] == [("labelstudio:ana@example.org", "Home > Decor", True)]
    out = tmp_path / "labels.csv"
    export_labels(db, out)
    assert {k: " > ".join(v) for k, v in read_labels_csv(out).labels.items()} == {
        pid[0]: sug[0][1],
        pid[1]: sug[1][0],
        pid[2]: "Home > Decor",
    }


def test_bad_records_are_reported_and_the_rest_go_in(db: Database, tmp_path: Path) -> None:
    tasks = _export(db, {})
    pid = tasks[0]["data"]["product_id"]
    two = _tax(tasks[0]["data"]["suggestions"][0]) + _tax(tasks[0]["data"]["suggestions"][1])
    records = [
        "nonsense",
        {"id": 7, "data": {"title": "no id"}, "annotations": []},
        {"id": 8, "data": {"product_id": "nope"}, "annotations": [_annotation(1, 1, _tax("A"), 1)]},
        {"id": 9, "data": tasks[0]["data"], "annotations": [_annotation(2, 1, two, 1)]},
        {"id": 10, "data": tasks[1]["data"], "annotations": [_annotation(3, 1, _tax("A > B"), 1)]},
        {"foo": 1},
    ]
    result = import_labelstudio(db, records)
    assert result.added == 1
    assert result.problems == [
        "record 1 of the export: expected an object, got 'nonsense'",
        "Label Studio task 7: data.product_id is missing",
        "record 6 of the export: neither a JSON task (with 'data') nor a JSON_MIN record (with "
        "'product_id' and 'annotation_id')",
        "Label Studio task 8 (product nope): the product is not in the desk's review queue",
        f"Label Studio task 9 (product {pid}): 1's answer left out: expected one category, got "
        f"{tasks[0]['data']['suggestions'][0]!r}, {tasks[0]['data']['suggestions'][1]!r}",
    ]
    with db.session() as s:  # the one good answer is in, with the annotator's id as its name
        (answer,) = s.scalars(select(ReviewAnswer))
        assert answer.reviewer == "labelstudio:1" and answer.category == "A > B"
        assert s.get(QueueItem, answer.product_id) is not None
    (tmp_path / "dict.json").write_text("{}")
    with pytest.raises(ValueError, match="expected a JSON list of tasks"):
        import_labelstudio(db, tmp_path / "dict.json")


def test_export_command_prints_what_label_studio_needs(db: Database, tmp_path: Path) -> None:
    out, config = tmp_path / "tasks.json", tmp_path / "interface.xml"
    root = Path(str(db.url)).parent  # any folder: photos outside it are inlined, and said so
    args = ["review", "export-labelstudio", "--out", str(out), "--config", str(config)]
    folder = ["review", "export-labelstudio", "--out", str(tmp_path), "--db", db.url]
    unwritable = CliRunner().invoke(app, folder)  # a folder: nothing written, nothing recorded
    assert unwritable.exit_code == 2 and f"cannot write {tmp_path}" in unwritable.output
    result = CliRunner().invoke(app, [*args, "--local-files-root", str(tmp_path), "--db", db.url])
    assert result.exit_code == 0, result.output
    assert f"{N} tasks: " in result.output and "0 open products Label Studio has" in result.output
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path.resolve()}" in result.output
    assert "outside" in result.output and "<Taxonomy" in config.read_text()
    assert all(
        t["data"]["image"].startswith("data:image/jpeg") for t in json.loads(out.read_text())
    )
    again = CliRunner().invoke(app, [*args, "--db", db.url])
    assert "0 tasks: " in again.output and f"{N} open products Label Studio has" in again.output
    assert "nothing to set in Label Studio" in again.output
    both = CliRunner().invoke(app, [*args, "--image-url", "x", "--local-files-root", str(root)])
    assert both.exit_code == 2 and "not both" in both.output
