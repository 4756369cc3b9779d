"""The REST API's routes in process (status codes, bodies, API keys, metrics) and its OpenAPI
schema checked against what the routes do (schemathesis)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from prodcat.catalogue import Catalogue
from prodcat.desk.db import Database, QueueItem
from prodcat.desk.queue import build_queue, queue_model
from prodcat.model.bundle import Model, model_version
from prodcat.serving import Settings, create_app


@pytest.fixture(scope="module")
def api(sample_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=sample_model_dir, max_batch_items=4))) as c:
        yield c


@pytest.fixture(scope="module")
def photo(sample_dir: Path) -> bytes:
    return (sample_dir / "images" / "10102.jpg").read_bytes()


def test_predict_multipart_and_json_give_the_same_full_answer(
    api: TestClient, photo: bytes
) -> None:
    title = "Puma Men Black Sports Shoes"
    by_form = api.post(
        "/v1/predict", data={"title": title, "id": "p1"}, files={"image": ("x.jpg", photo)}
    )
    by_json = api.post(
        "/v1/predict", json={"title": title, "id": "p1", "image_base64": base64.b64encode(photo)
                             .decode()},
    )  # fmt: skip
    assert by_form.status_code == by_json.status_code == 200
    a, b = by_form.json(), by_json.json()
    assert a["id"] == "p1" and a["category"] == b["category"]
    assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
    assert a["path"] == a["category"].split(" > ") and len(a["path"]) == 3
    assert [lvl["category"] for lvl in a["level_probabilities"]] == [
        " > ".join(a["path"][: i + 1]) for i in range(3)
    ]
    assert a["level_probabilities"][-1]["probability"] == pytest.approx(a["probability"])
    assert len(a["top"]) == 5 and a["top"][0]["category"] == a["category"]
    probabilities = [t["probability"] for t in a["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert a["decision"] in ("accept", "review", "unknown")
    assert a["modalities"] == ["image", "text"]
    assert len(a["model_version"]) == 12
    timings = a["timings"]
    assert timings["total_ms"] > 0 and timings["image_ms"] > 0 and timings["batch_size"] >= 1


def test_either_modality_may_be_missing(api: TestClient, photo: bytes) -> None:
    photo_only = api.post("/v1/predict", files={"image": ("x.jpg", photo)})
    title_only = api.post("/v1/predict", json={"title": "Women Blue Skinny Jeans"})
    assert photo_only.status_code == title_only.status_code == 200
    assert photo_only.json()["modalities"] == ["image"]
    assert title_only.json()["modalities"] == ["text"]
    assert title_only.json()["category"] == "Apparel > Bottomwear > Jeans"


def test_batch_answers_in_order_and_enforces_its_limit(api: TestClient) -> None:
    items = [{"title": "Women Blue Skinny Jeans"}, {"title": "Men Brown Leather Belt"}]
    response = api.post("/v1/predict/batch", json={"items": items})
    assert response.status_code == 200
    body = response.json()
    assert body["n_ok"] == 2 and body["n_errors"] == 0
    assert [i["prediction"]["category"] for i in body["items"]] == [
        "Apparel > Bottomwear > Jeans",
        "Accessories > Belts > Belts",
    ]
    too_many = api.post("/v1/predict/batch", json={"items": items * 3})
    assert too_many.status_code == 413
    assert too_many.json() == {
        "detail": "the batch has 6 items; the limit is 4 per call: split it",
        "field": "items",
    }


def test_model_health_and_metrics(api: TestClient) -> None:
    info = api.get("/v1/model").json()
    assert info["head"] in ("fusion", "fusion-blend") and len(info["classes"]) == 20
    assert {"effnet-lite0", "minilm"} <= set(info["encoder_versions"])
    assert info["limits"]["max_batch_items"] == 4
    assert info["taxonomy"]["labels"][0] == info["classes"][0].split(" > ")
    health = api.get("/healthz").json()
    assert health["status"] == "ok" and health["model_version"] == info["model_version"]
    api.post("/v1/predict", json={"title": "Men Brown Leather Belt"})
    api.post("/v1/predict", json={})
    metrics = api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'prodcat_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'prodcat_http_errors_total{route="/v1/predict",status="422"}' in text
    assert "prodcat_http_request_duration_seconds_bucket" in text
    assert 'prodcat_predictions_total{decision="' in text
    assert f'prodcat_model_info{{model_version="{info["model_version"]}"}} 1.0' in text


def test_one_model_version_for_the_bundle_the_api_and_the_desk(
    api: TestClient, sample_model_dir: Path, sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    version = model_version(sample_model_dir)
    assert len(version) == 12 and Model.load(sample_model_dir).version == version
    assert api.get("/v1/model").json()["model_version"] == version
    assert api.get("/healthz").json()["model_version"] == version
    answer = api.post("/v1/predict", json={"title": "Men Brown Leather Belt"}).json()
    assert answer["model_version"] == version
    batch = api.post("/v1/predict/batch", json={"items": [{"title": "Women Blue Jeans"}]}).json()
    assert batch["model_version"] == batch["items"][0]["prediction"]["model_version"] == version
    assert f'prodcat_model_info{{model_version="{version}"}} 1.0' in api.get("/metrics").text
    db = Database(f"sqlite:///{tmp_path / 'desk.db'}")
    build_queue(db, Model.load(sample_model_dir), sample_catalogue.products[:12])
    with db.session() as s:
        assert set(s.scalars(select(QueueItem.model_version))) == {version}
    shown = queue_model(db)
    assert shown is not None and shown.version == version
    assert shown.name == sample_model_dir.name
    db.dispose()


def test_any_changed_file_changes_the_model_version(sample_model_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(sample_model_dir, tmp_path / "model"))
    versions = [model_version(copy)]
    assert versions[0] == model_version(sample_model_dir)  # the content, not the folder's path
    gate = copy / "gate" / "gate.json"
    config = json.loads(gate.read_text())
    gate.write_text(json.dumps({**config, "edited": True}))  # the gate alone
    versions.append(model_version(copy))
    assert Model.load(copy).version == versions[-1]
    (copy / "head" / "weights.safetensors").rename(copy / "head" / "renamed.safetensors")
    versions.append(model_version(copy))
    (copy / "photo_encoder.onnx").write_bytes(b"any file of the folder counts")
    versions.append(model_version(copy))
    assert len(set(versions)) == len(versions)
    assert model_version(copy) == versions[-1]  # and it is stable
    with pytest.raises(ValueError, match="is not a model directory"):
        model_version(tmp_path / "nothing here")


def test_api_keys(sample_model_dir: Path) -> None:
    configured = Settings(model_dir=sample_model_dir, api_keys="k-one, k-two", warm_up=False)
    assert configured.api_keys == frozenset({"k-one", "k-two"})
    with TestClient(create_app(configured)) as client:
        body = {"title": "Men Brown Leather Belt"}
        missing = client.post("/v1/predict", json=body)
        assert missing.status_code == 401
        assert missing.json()["detail"] == "missing API key: send it in the X-API-Key header"
        wrong = client.get("/v1/model", headers={"X-API-Key": "k-three"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
        assert client.post("/v1/predict/batch", json={"items": [body]}).status_code == 401
        ok = client.post("/v1/predict", json=body, headers={"X-API-Key": "k-two"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200  # probes need no key
        schema = client.get("/openapi.json").json()
        assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, sample_model_dir: Path
) -> None:
    monkeypatch.setenv("PRODCAT_MODEL_DIR", str(sample_model_dir))
    monkeypatch.setenv("PRODCAT_MAX_BATCH_ITEMS", "7")
    monkeypatch.setenv("PRODCAT_API_KEYS", "abc")
    loaded = Settings()  # type: ignore[call-arg]
    assert loaded.model_dir == sample_model_dir
    assert loaded.max_batch_items == 7 and loaded.api_keys == frozenset({"abc"})
    monkeypatch.setenv("PRODCAT_MAX_BATCH_ITEMS", "0")
    with pytest.raises(ValueError, match="max_batch_items"):
        Settings()  # type: ignore[call-arg]


# -- the schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_schema_matches_the_routes(api: TestClient, mode: GenerationMode) -> None:
    """Generated requests, valid and invalid, never get a 5xx, and every answer's status, content
    type and body are ones the schema documents (bounded: 40 examples per mode)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)

    @given(case=schema.as_strategy(mode))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ]
        )

    check()


def test_title_and_base64_checks_say_what_is_wrong() -> None:
    from prodcat.serving.predictor import InputError, check_title, decode_base64

    assert check_title(None, 10) == ""
    assert check_title("  Blue\n shirt\t", 20) == "Blue shirt"
    assert check_title("👟 حذاء", 20) == "👟 حذاء"
    with pytest.raises(InputError, match="unpaired surrogate U\\+D800 at position 1"):
        check_title("a\ud800", 10)
    with pytest.raises(InputError, match="control character U\\+007F"):
        check_title("a\x7f", 10)
    with pytest.raises(InputError, match="11 characters; the limit is 10"):
        check_title("a" * 11, 10)
    assert decode_base64("data:image/png;base64,aGVsbG8=", 1024) == b"hello"
    with pytest.raises(InputError, match="not valid base64"):
        decode_base64("aGVsbG8", 1024)
    with pytest.raises(InputError, match="the limit is 1,024") as too_big:
        decode_base64("A" * 2000, 1024)
    assert too_big.value.status == 413


def test_serve_commands_refuse_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    import subprocess
    import sys

    from typer.testing import CliRunner

    from prodcat.cli import app as cli_app

    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "is not a prodcat model (no model.json)" in result.output
    light = subprocess.run(
        [sys.executable, "-c", "from prodcat.serving.command import main; main()", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert light.returncode == 2 and "no model.json" in light.stderr


# -- the drift alarm over the rolling window (prodcat.monitor; tests/test_monitor.py) ----------
def _gauge(text: str, name: str) -> float | None:
    """A sample's value in Prometheus text, e.g. 'prodcat_drift' or 'x{signal="y"}'."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_metrics_raise_the_drift_gauge_over_a_bounded_window(sample_model_dir: Path) -> None:
    settings = Settings(
        model_dir=sample_model_dir, drift_window=20, drift_min_products=10, warm_up=False
    )
    with TestClient(create_app(settings)) as client:
        for title in ("Men Brown Leather Belt", "Women Blue Jeans", "Puma Men Black Shoes"):
            assert client.post("/v1/predict", json={"title": title}).status_code == 200
        text = client.get("/metrics").text
        assert _gauge(text, "prodcat_drift_window_products") == 3.0
        assert _gauge(text, "prodcat_drift") == 0.0  # too few products for a verdict yet
        assert "prodcat_drift_p_value{" not in text
        # Titles without photos, when the validation part had a photo for every product.
        items = [{"title": f"Men Blue Cotton Shirt {i}"} for i in range(30)]
        for start in (0, 15):
            batch = {"items": items[start : start + 15]}
            assert client.post("/v1/predict/batch", json=batch).status_code == 200
        text = client.get("/metrics").text
    assert _gauge(text, "prodcat_drift_window_products") == 20.0  # the latest 20 only
    assert _gauge(text, "prodcat_drift") == 1.0
    photos = _gauge(text, 'prodcat_drift_p_adjusted{signal="photo_share"}')
    assert photos is not None and photos <= 0.01
    assert _gauge(text, 'prodcat_drift_statistic{signal="photo_share"}') == -1.0


def test_the_samples_test_part_through_the_api_raises_no_drift(
    sample_model_dir: Path, sample_catalogue: Catalogue
) -> None:
    """The API records what training recorded of the validation part, the same way: products
    like it leave the gauge at 0."""
    from prodcat.catalogue.split import split_catalogue

    test = split_catalogue([p for p in sample_catalogue.products if p.label])["test"]
    settings = Settings(
        model_dir=sample_model_dir, max_batch_items=64, drift_min_products=100, warm_up=False
    )
    items = [
        {"id": p.id, "title": p.text, "image_base64": base64.b64encode(p.image.read_bytes())
         .decode()}
        for p in test if p.image is not None
    ]  # fmt: skip
    with TestClient(create_app(settings)) as client:
        for start in range(0, len(items), 64):
            batch = {"items": items[start : start + 64]}
            assert client.post("/v1/predict/batch", json=batch).json()["n_errors"] == 0
        text = client.get("/metrics").text
    assert _gauge(text, "prodcat_drift_window_products") == len(items) > 100
    assert _gauge(text, "prodcat_drift") == 0.0
    signals = [line for line in text.splitlines() if line.startswith("prodcat_drift_p_value{")]
    assert len(signals) == 9
