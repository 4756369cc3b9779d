"""The fast single-product path answers exactly as the batch path did (to 1e-5).

What issue 19 changed on the way of one product: the fusion network runs on one ONNX thread, the
taxonomy's ancestor matrix is built once per class list, the micro-batcher runs a lone request
at once instead of holding it for a window, the networks' calls spread over worker threads, and
the API runs batches side by side. None of it may move an answer. No timings here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from prodcat.catalogue import Catalogue
from prodcat.features.cache import FeatureCache
from prodcat.heads.onnx_runtime import OnnxHead
from prodcat.model.bundle import Model
from prodcat.model.prediction import Prediction
from prodcat.model.predictor import Predictor, ProductInput
from prodcat.serving import Settings, create_app
from prodcat.taxonomy.probabilities import ancestor_matrix, level_probabilities, prefixes

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model(sample_model_dir: Path) -> Model:
    return Model.load(sample_model_dir)


@pytest.fixture(scope="module")
def items(sample_catalogue: Catalogue) -> list[ProductInput]:
    """Twelve sample products spread over the catalogue, photo + title."""
    chosen = sample_catalogue.products[::125][:12]
    return [ProductInput(p.id, p.text, p.image) for p in chosen]


def same_answers(a: list[Prediction], b: list[Prediction]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.id == y.id and x.category == y.category and x.decision == y.decision
        assert [c for c, _ in x.top] == [c for c, _ in y.top]
        np.testing.assert_allclose([p for _, p in x.top], [p for _, p in y.top], atol=TOLERANCE)
        np.testing.assert_allclose(x.level_probabilities, y.level_probabilities, atol=TOLERANCE)
        assert x.ood_score == pytest.approx(y.ood_score, abs=TOLERANCE)


def test_the_fusion_network_runs_on_one_thread_with_the_same_logits(
    model: Model, sample_model_dir: Path, sample_catalogue: Catalogue, private_cache_dir: Path
) -> None:
    fusion = model.head.fusion_  # type: ignore[attr-defined]
    assert isinstance(fusion, OnnxHead) and fusion.threads == 1
    pooled = OnnxHead.from_folder(sample_model_dir / "head", threads=2)
    inputs, _ = model.encode(
        sample_catalogue.products[:40], FeatureCache(private_cache_dir), progress=False
    )
    one, two = fusion.decision_logits(inputs), pooled.decision_logits(inputs)
    assert one.shape == (40, len(model.classes))
    np.testing.assert_allclose(one, two, atol=TOLERANCE)


def test_the_ancestor_matrix_is_built_once_and_sums_the_leaves(model: Model) -> None:
    classes = model.classes
    nodes, matrix = ancestor_matrix(classes)
    again = ancestor_matrix(list(classes))
    assert again[1] is matrix  # the cached one
    proba = np.random.default_rng(0).dirichlet(np.ones(len(classes)), size=5)
    levels = level_probabilities(proba, classes)
    for row, answer in zip(proba, levels, strict=True):
        leaf = classes[int(np.argmax(row))]  # every class is a leaf of the tree
        for node, value in answer.items():
            expected = sum(p for c, p in zip(classes, row, strict=True) if node in prefixes(c))
            assert value == pytest.approx(expected, abs=1e-12)
        assert list(answer) == prefixes(leaf)
    assert len(nodes) == matrix.shape[1]


def test_one_product_at_a_time_answers_as_the_batch(
    model: Model, items: list[ProductInput]
) -> None:
    predictor = Predictor(model)
    batch = predictor.predict(items)
    single = [predictor.predict([item])[0] for item in items]
    assert {a.modalities == ["image", "text"] for a in batch} == {True}
    same_answers(single, batch)


@pytest.fixture(scope="module")
def api(sample_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=sample_model_dir))) as client:
        yield client


def test_the_api_runs_a_lone_request_at_once_and_answers_as_the_predictor(
    api: TestClient, model: Model, items: list[ProductInput]
) -> None:
    assert api.app.state.settings.batch_window_ms == 0.0  # the default
    expected = Predictor(model).predict(items[:4])
    for item, answer in zip(items[:4], expected, strict=True):
        assert isinstance(item.image, Path)
        body = {
            "id": item.id,
            "title": item.title,
            "image_base64": base64.b64encode(item.image.read_bytes()).decode(),
        }
        response = api.post("/v1/predict", json=body)
        assert response.status_code == 200
        got = response.json()
        assert got["category"] == answer.category and got["decision"] == answer.decision
        assert got["timings"]["batch_size"] == 1
        assert [t["category"] for t in got["top"]] == [c for c, _ in answer.top]
        np.testing.assert_allclose(
            [t["probability"] for t in got["top"]], [p for _, p in answer.top], atol=TOLERANCE
        )
        assert got["ood_score"] == pytest.approx(answer.ood_score, abs=TOLERANCE)


def test_the_networks_give_the_same_vectors_on_one_worker_or_two(
    model: Model, items: list[ProductInput]
) -> None:
    """Calls spread over worker threads (photos split, titles sorted by length and put back)
    give the encoders' own vectors."""
    one, two = Predictor(model, threads=1), Predictor(model, threads=2)
    assert one.networks.threads == 1 and two.networks.threads == 2
    prepared = two.prepare(items)
    titles = [item.title for item in items] + ["a", "a much longer title than all the others"]
    expected_photos = one.image_encoder.encode_arrays(prepared.pixels)  # type: ignore[union-attr]
    expected_titles = np.hstack([e.encode(titles) for e in one.text_encoders])
    for predictor in (one, two):
        encoded = predictor.networks.encode(prepared.pixels, titles)
        assert encoded.image is not None and encoded.text is not None
        assert encoded.image.shape == (len(items), 1280)
        np.testing.assert_allclose(encoded.image, expected_photos, atol=TOLERANCE)
        np.testing.assert_allclose(encoded.text, expected_titles, atol=TOLERANCE)
        assert predictor.networks.waiting == 0  # every call started: the API's batcher won't wait


def test_batch_prediction_in_overlapping_chunks_answers_as_one_batch(
    model: Model, sample_catalogue: Catalogue, items: list[ProductInput]
) -> None:
    products = sample_catalogue.products[::125][:12]
    predictor = Predictor(model)
    chunked = predictor.predict_products(products, chunk=5)  # 5 + 5 + 2, heads overlapped
    same_answers(chunked, predictor.predict(items))


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(
    sample_model_dir: Path, model: Model, items: list[ProductInput]
) -> None:
    """Twelve requests at once, one with a broken photo: each good one gets its own product's
    answer, the broken one its own error, and the requests are answered in shared batches."""
    import asyncio

    from prodcat.serving.predictor import InputError, ServicePredictor

    service = ServicePredictor(Settings(model_dir=sample_model_dir))
    expected = Predictor(model).predict(items)
    requests = [
        ProductInput(item.id, item.title, item.image.read_bytes())  # type: ignore[union-attr]
        for item in items
    ]
    requests[3] = ProductInput("broken", "a title", b"not a photo")

    async def ask_all() -> list[object]:
        try:
            asked = [service.answer_product(r, "image") for r in requests]
            return await asyncio.gather(*asked, return_exceptions=True)
        finally:
            await service.stop()

    answers = asyncio.run(ask_all())
    error = answers.pop(3)
    assert isinstance(error, InputError) and error.field == "image"
    assert str(error).startswith("image: ")
    good = [a for a in answers if not isinstance(a, BaseException)]
    assert len(good) == 11
    same_answers([a.prediction for a in good], expected[:3] + expected[4:])  # type: ignore[attr-defined]
    assert max(a.timings["batch_size"] for a in good) > 1  # type: ignore[attr-defined]
