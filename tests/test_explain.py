"""Explanations (`prodcat.model.explain`) on the sample model: the neighbour index training writes,
the words / modality shares / neighbours of an answer, their faithfulness (the deletion test), and
the fields in `prodcat predict --explain`, the API's `explain=true` and the desk."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from desk_support import csrf_of
from prodcat.catalogue import Catalogue, Product
from prodcat.catalogue.split import split_catalogue
from prodcat.cli import app
from prodcat.features.cache import FeatureCache
from prodcat.heads import Inputs
from prodcat.model import explain as ex
from prodcat.model.bundle import Model
from prodcat.model.neighbours import INDEX_DIR, NeighbourIndex, NeighbourIndexError
from prodcat.taxonomy.tree import format_path

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def model(sample_model_dir: Path) -> Model:
    return Model.load(sample_model_dir)


@pytest.fixture(scope="module")
def parts(sample_catalogue: Catalogue) -> dict[str, list[Product]]:
    return split_catalogue([p for p in sample_catalogue.products if p.label])


@pytest.fixture(scope="module")
def test_inputs(
    model: Model, parts: dict[str, list[Product]], private_cache_dir: Path
) -> tuple[list[Product], Inputs]:
    """The test part of the sample, of the model's classes, encoded through the cache."""
    known = set(model.classes)
    products = [p for p in parts["test"] if format_path(p.label or ()) in known]
    inputs, _ = model.encode(products, FeatureCache(private_cache_dir), progress=False)
    return products, inputs


# -- the neighbour index --------------------------------------------------------------------------
def test_training_writes_a_compact_index_that_finds_a_training_product_itself(
    model: Model, parts: dict[str, list[Product]], sample_model_dir: Path, private_cache_dir: Path
) -> None:
    index = model.neighbours
    assert index is not None and index.sources == ["image", "text"]
    known = set(model.classes)
    train = [p for p in parts["train"] if format_path(p.label or ()) in known]
    assert index.ids == [p.id for p in train]
    assert index.codes.dtype == np.int8 and index.codes.shape == (len(train), 128)
    assert (sample_model_dir / INDEX_DIR / "index.safetensors").stat().st_size < 1_000_000
    inputs, _ = model.encode(train[:20], FeatureCache(private_cache_dir), progress=False)
    nearest = index.nearest(inputs, k=3)
    for product, found in zip(train[:20], nearest, strict=True):
        assert found[0].id == product.id and found[0].similarity > 0.99  # int8 rounding only
        assert found[0].category == format_path(product.label or ())
        assert [n.similarity for n in found] == sorted((n.similarity for n in found), reverse=True)
        assert found[0].photo is not None and Path(found[0].photo).is_file()


def test_a_damaged_index_is_refused_with_its_folder_named(model: Model, tmp_path: Path) -> None:
    assert model.neighbours is not None
    model.neighbours.save(tmp_path)
    meta = tmp_path / INDEX_DIR / "products.json"
    data = json.loads(meta.read_text())
    data["titles"] = data["titles"][:-1]
    meta.write_text(json.dumps(data))
    with pytest.raises(NeighbourIndexError, match="one each"):
        NeighbourIndex.load(tmp_path)
    meta.write_text("{not json")
    with pytest.raises(NeighbourIndexError, match="cannot be read"):
        NeighbourIndex.load(tmp_path)
    assert NeighbourIndex.load(tmp_path / "elsewhere") is None  # no index: none, no error


# -- what an explanation holds --------------------------------------------------------------------
def test_an_explanation_has_words_shares_and_three_neighbours(
    model: Model, test_inputs: tuple[list[Product], Inputs]
) -> None:
    products, inputs = test_inputs
    reasons = ex.explain(model, inputs.subset(range(12)), ex.model_title_encoding(model))
    logits = model.head.decision_logits(inputs.subset(range(12)))
    for i, reason in enumerate(reasons):
        assert reason.category == model.classes[int(logits[i].argmax())]
        assert reason.runner_up in model.classes and reason.runner_up != reason.category
        assert [w for w, _ in reason.words] and {w for w, _ in reason.words} == set(
            ex.distinct_words(products[i].text)
        )
        weights = [v for _, v in reason.words]
        assert weights == sorted(weights, reverse=True)
        assert reason.photo is not None and reason.title is not None
        assert abs(reason.photo) + abs(reason.title) == pytest.approx(1.0)
        assert reason.photo_alone is not None and 0.0 <= reason.photo_alone <= 1.0
        assert len(reason.neighbours) == 3
        assert all(n.category in model.classes for n in reason.neighbours)
    as_json = json.loads(json.dumps(reasons[0].as_dict()))
    assert set(as_json) >= {"words", "photo", "title", "neighbours", "runner_up"}
    assert set(as_json["neighbours"][0]) == {"id", "title", "category", "similarity", "photo"}


def test_a_word_that_names_the_class_pushes_towards_it(model: Model) -> None:
    from prodcat.model.predictor import Predictor, ProductInput

    title = "Nike Men Black Running Sports Shoes"
    (answer,) = Predictor(model).predict([ProductInput("p", title, None, explain=True)])
    reason = answer.explanation
    assert reason is not None and reason["category"] == answer.top[0][0]
    assert reason["category"].endswith("Shoes")
    top_words = [w["word"] for w in reason["words"][:2]]
    assert "shoes" in top_words or "sports" in top_words, reason["words"]
    assert reason["photo"] is None  # no photo: nothing to share the decision with
    assert len(reason["neighbours"]) == 3


def test_linear_word_weights_add_up_to_the_blend_words_part_exactly(
    model: Model, test_inputs: tuple[list[Product], Inputs]
) -> None:
    """For the blend's linear words model the contributions are exact: they sum to its share of
    the logit margin (less the intercepts)."""
    _, inputs = test_inputs
    sub = inputs.subset(range(20))
    logits = model.head.decision_logits(sub)
    order = np.argsort(-logits, axis=1)
    top, runner = order[:, 0], order[:, 1]
    weights = ex.word_weights(model, sub, None, top, runner, method="linear")
    words = model.head.words_  # type: ignore[attr-defined]
    z = words.model_.logits(words.vectorizer_.transform(sub.texts))
    intercept = words.model_.intercept
    rows = np.arange(len(sub))
    expected = (1 - model.head.weight_) * (  # type: ignore[attr-defined]
        (z[rows, top] - intercept[top]) - (z[rows, runner] - intercept[runner])
    )
    assert [sum(v for _, v in ws) for ws in weights] == pytest.approx(expected.tolist(), abs=1e-9)


def test_an_unknown_word_method_is_refused(model: Model) -> None:
    inputs = Inputs(texts=["Red Shirt"])
    with pytest.raises(ValueError, match="expected 'occlusion' or 'linear'"):
        ex.word_weights(model, inputs, None, np.array([0]), np.array([1]), method="magic")


# -- faithful, not decorative ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["occlusion", "linear"])
def test_deleting_the_top_words_changes_far_more_answers_than_random_words(
    model: Model, test_inputs: tuple[list[Product], Inputs], method: str
) -> None:
    """Measured on the sample's test part with this model (seed 0): occlusion changes 29% of the
    answers when its top 2 words go against 7% for 2 random words; linear 27% against 8%."""
    _, inputs = test_inputs
    result = ex.deletion_test(model, inputs, ex.model_title_encoding(model), method=method)
    assert result.n_products >= 100
    assert result.top_changed >= 0.15
    assert result.top_changed >= 2.5 * result.random_changed, result


# -- where explanations show ----------------------------------------------------------------------
def test_predict_explain_adds_the_reasons_to_csv_and_jsonl(
    sample_model_dir: Path, sample_dir: Path, tmp_path: Path
) -> None:
    rows = (sample_dir / "products.csv").read_text(encoding="utf-8").splitlines()[:6]
    table = tmp_path / "few.csv"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "images").symlink_to(sample_dir / "images")
    runner = CliRunner()
    jsonl, plain, flat = tmp_path / "p.jsonl", tmp_path / "plain.csv", tmp_path / "p.csv"
    for out, extra in ((jsonl, ["--explain"]), (flat, ["--explain"]), (plain, [])):
        args = ["predict", str(sample_model_dir), str(table), "--out", str(out), *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 5
    for record in records:
        reason = record["explanation"]
        assert reason["category"] == record["top"][0]["category"]
        assert len(reason["neighbours"]) == 3 and reason["words"]
    with flat.open(encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    assert json.loads(first["explanation"])["words"][0]["word"] in first["top_words"].split()
    assert "explanation" not in plain.read_text().splitlines()[0]  # without --explain: as before


def test_the_api_explains_only_when_asked(sample_model_dir: Path, sample_dir: Path) -> None:
    from prodcat.serving import Settings, create_app

    photo = (sample_dir / "images" / "10102.jpg").read_bytes()
    with TestClient(create_app(Settings(model_dir=sample_model_dir))) as api:
        title, files = {"title": "Puma Men Black Sports Shoes"}, {"image": ("x.jpg", photo)}
        plain = api.post("/v1/predict", data=title, files=files).json()
        asked = api.post("/v1/predict?explain=true", data=title, files=files).json()
        batch = api.post(
            "/v1/predict/batch?explain=true", json={"items": [{"title": "Women Blue Jeans"}]}
        ).json()
    assert plain["explanation"] is None
    reason = asked["explanation"]
    assert reason["category"] == asked["top"][0]["category"]
    assert {w["word"] for w in reason["words"]} == {"puma", "men", "black", "sports", "shoes"}
    assert reason["photo"] is not None and len(reason["neighbours"]) == 3
    assert "photo" not in reason["neighbours"][0]  # the server's paths stay out of the API
    only_title = batch["items"][0]["prediction"]["explanation"]
    assert only_title["photo"] is None and only_title["words"]


def test_the_desk_shows_the_reasons_and_the_neighbours_photos(
    model: Model, sample_catalogue: Catalogue, private_cache_dir: Path, tmp_path: Path
) -> None:
    from prodcat.desk.app import create_app
    from prodcat.desk.auth import add_user
    from prodcat.desk.db import Database
    from prodcat.desk.queue import build_queue

    db = Database(f"sqlite:///{tmp_path / 'desk.db'}")
    products = sample_catalogue.products[:300]
    result = build_queue(
        db, model, products, cache=FeatureCache(private_cache_dir), audit_rate=0, explain=True
    )
    assert result.queued > 0
    add_user(db, "rev", PASSWORD, "reviewer")
    with TestClient(create_app(db), follow_redirects=False) as desk:
        page = desk.get("/login")
        login = {"name": "rev", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
        assert desk.post("/login", data=login).status_code == 303
        assert 'id="why"' in desk.get("/desk").text
        task = desk.get("/api/next").json()["task"]
        reason = task["explanation"]
        assert reason["category"] == task["top"][0]["category"] and reason["words"]
        shown = reason["neighbours"]
        assert len(shown) == 3 and all("photo" not in n for n in shown)
        photo = desk.get(shown[0]["image_url"])
        assert photo.status_code == 200
        by_id = sample_catalogue.by_id()
        image = by_id[shown[0]["id"]].image
        assert image is not None and photo.content == image.read_bytes()
        pid = task["product_id"]
        assert desk.get(f"/image/{pid}/neighbour/7").status_code == 404
    db.dispose()
