"""The torch-free prediction path: the head's ONNX graph, and one answer per product whichever way
it is asked (Python API, `prodcat predict`, REST API)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from prodcat.catalogue import Catalogue, load_catalogue
from prodcat.cli import app as cli_app
from prodcat.features.cache import FeatureCache
from prodcat.heads.onnx_runtime import OnnxHead
from prodcat.model.bundle import Model
from prodcat.model.predictor import Predictor, ProductInput
from prodcat.serving import Settings, create_app


def test_saved_model_carries_the_head_graph_and_loads_it(sample_model_dir: Path) -> None:
    assert (sample_model_dir / "head" / "head.onnx").is_file()
    model = Model.load(sample_model_dir)
    # A fusion head runs whole from the graph; a fusion-blend head runs its fusion part from it.
    onnx_part = model.head if model.head_kind == "fusion" else model.head.fusion_  # type: ignore[attr-defined]
    assert isinstance(onnx_part, OnnxHead)
    assert model.head_kind in ("fusion", "fusion-blend")
    assert Model.load(sample_model_dir, runtime="torch").head.name == model.head_kind
    with pytest.raises(ValueError, match="runtime='tensorflow' is not supported"):
        Model.load(sample_model_dir, runtime="tensorflow")


def test_onnx_head_gives_the_torch_heads_probabilities(
    sample_model_dir: Path, sample_catalogue: Catalogue, private_cache_dir: Path
) -> None:
    onnx_model = Model.load(sample_model_dir)
    torch_model = Model.load(sample_model_dir, runtime="torch")
    products = sample_catalogue.products[:300]
    inputs, _ = torch_model.encode(products, FeatureCache(private_cache_dir), progress=False)
    # Hide the photo of some and the title of others: the masks must reach the graph too.
    image_mask, text_mask = inputs.has_image.copy(), inputs.has_text.copy()
    image_mask[::7], text_mask[3::7] = False, False
    masked = type(inputs)(inputs.texts, inputs.image, inputs.text, image_mask, text_mask)
    expected = torch_model.predict_proba(masked)
    got = onnx_model.predict_proba(masked)
    assert got.shape == (300, len(torch_model.classes))
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    with pytest.raises(ValueError, match=r"X has 10 image features, but \w+Head was fitted"):
        onnx_model.predict_proba(type(inputs)(["a"], np.zeros((1, 10)), inputs.text[:1]))


PROBE = """
import json, sys
from pathlib import Path
from prodcat.model.predictor import ProductInput, Predictor
from prodcat.model.bundle import Model
from prodcat.serving import Settings, create_app
from fastapi.testclient import TestClient

folder, photo = Path(sys.argv[1]), Path(sys.argv[2])
model = Model.load(folder)
product = ProductInput("p", "Men Blue Running Shoes", photo.read_bytes())
(answer,) = Predictor(model).predict([product])
with TestClient(create_app(Settings(model_dir=folder))) as client:
    r = client.post("/v1/predict", files={"image": ("p.jpg", photo.read_bytes())},
                    data={"title": "Men Blue Running Shoes"})
print(json.dumps({"torch": "torch" in sys.modules, "category": answer.category,
                  "status": r.status_code, "api": r.json()["category"],
                  "modalities": answer.modalities}))
"""


def test_prediction_path_never_imports_torch(sample_model_dir: Path, sample_dir: Path) -> None:
    photo = next((sample_dir / "images").glob("*.jpg"))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(sample_model_dir), str(photo)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["torch"] is False
    assert probe["status"] == 200
    assert probe["api"] == probe["category"] and probe["category"].count(" > ") == 2
    assert probe["modalities"] == ["image", "text"]


def test_api_cli_and_python_api_give_the_same_answers(
    sample_model_dir: Path, sample_dir: Path, tmp_path: Path
) -> None:
    rows = (sample_dir / "products.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    # 24 products spread over the sample; the last one without its photo (title only).
    picked = body[:: len(body) // 24][:24]
    table = tmp_path / "new.csv"
    columns = header.split(",")
    image_col = columns.index("image")
    lines = [header]
    for i, line in enumerate(picked):
        cells = next(__import__("csv").reader([line]))
        cells[image_col] = "" if i == len(picked) - 1 else str(sample_dir / cells[image_col])
        lines.append(",".join(f'"{c}"' for c in cells))
    table.write_text("\n".join(lines) + "\n")
    products = load_catalogue(table).products
    assert len(products) == 24 and products[-1].image is None

    python_api = {p.id: p for p in Model.load(sample_model_dir).predict(products)}
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(
        cli_app, ["predict", str(sample_model_dir), str(table), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cli = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    with TestClient(create_app(Settings(model_dir=sample_model_dir))) as client:
        api = {}
        for p in products:
            if p.image:
                files = {"image": ("photo.jpg", p.image.read_bytes())}
                r = client.post("/v1/predict", data={"title": p.text, "id": p.id}, files=files)
            else:
                r = client.post("/v1/predict", json={"title": p.text, "id": p.id})
            assert r.status_code == 200, r.text
            api[p.id] = r.json()

    assert set(python_api) == set(cli) == set(api) == {p.id for p in products}
    for pid, expected in python_api.items():
        # The predictions file names the answer predicted_*, so it joins the input cleanly.
        for other, answer in ((cli[pid], "predicted_"), (api[pid], "")):
            assert other[f"{answer}category"] == expected.category
            assert other["decision"] == expected.decision
            assert [t["category"] for t in other["top"]] == [c for c, _ in expected.top]
            assert other[f"{answer}probability"] == pytest.approx(expected.probability, abs=1e-5)
            assert other["modalities"] == expected.modalities
    assert api[products[-1].id]["modalities"] == ["text"]
    # The CLI runs the Python API's exact batches: bit-identical probabilities.
    assert all(cli[pid]["predicted_probability"] == python_api[pid].probability for pid in cli)


def test_predictor_answers_from_the_title_when_the_photo_fails(sample_model_dir: Path) -> None:
    predictor = Predictor(Model.load(sample_model_dir))
    good, bad = predictor.predict(
        [
            ProductInput("a", "Women Black Handbag"),
            ProductInput("b", "Women Black Handbag", b"not an image"),
        ]
    )
    assert good.error is None and bad.error is not None
    assert "not an image Pillow can read" in bad.error
    assert bad.modalities == ["text"] and bad.category == good.category
