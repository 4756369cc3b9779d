"""The fast single-product path answers exactly as the batch path did (to 1e-5).

What issue 19 changed on the way of one product: the fusion network runs on one ONNX thread, the
taxonomy's ancestor matrix is built once per class list, and the micro-batcher runs a lone request
at once instead of holding it for a window. None of it may move an answer. No timings here.
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
