"""Whole-network fine-tuning (`prodcat train --fine-tune-whole`): the tuned photo network becomes
the model's photo encoder, exported to ONNX exactly, saved in the model folder, checked on load.

Real photos and titles from the bundled sample, at 64 px and one or two epochs so the suite stays
fast; whether tuning pays on a large catalogue is a benchmark question
(docs/benchmarks.md, "Photo only").
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from prodcat.catalogue import Catalogue, Product
from prodcat.catalogue.images import load_image
from prodcat.cli import app
from prodcat.encoders import get_encoder
from prodcat.encoders.image import EfficientNetLiteEncoder
from prodcat.features.cache import FeatureCache
from prodcat.model.bundle import ENCODER_FILE, Model, ModelError
from prodcat.model.predictor import Predictor, ProductInput
from prodcat.paths import tuned_scratch_dir
from prodcat.taxonomy.tree import format_path
from prodcat.training.train import TrainOptions, TrainResult, train
from prodcat.training.whole_network import WholeTuneSettings, decode_photos

SIZE = 64
WANTED = ("Accessories > Watches > Watches", "Apparel > Topwear > Tshirts")
runner = CliRunner()


def _two_classes(catalogue: Catalogue) -> Catalogue:
    rows = [p for p in catalogue.products if format_path(p.label or ()) in WANTED]
    return Catalogue(source=catalogue.source, products=rows[:200])


@pytest.fixture(scope="module")
def tuned(
    sample_catalogue: Catalogue, private_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Path]:
    """Watches and T-shirts, photo + title, the photo network tuned for 2 epochs at 64 px."""
    options = TrainOptions(image_size=SIZE, fine_tune_whole=True, fine_tune_epochs=2, seed=0)
    result = train(
        _two_classes(sample_catalogue),
        options,
        cache=FeatureCache(private_cache_dir / "features"),
        progress=False,
    )
    return result, result.model.save(tmp_path_factory.mktemp("whole") / "model")


def test_the_tuned_network_is_the_models_photo_encoder(tuned: tuple[TrainResult, Path]) -> None:
    result, folder = tuned
    saved = json.loads((folder / "model.json").read_text())
    assert saved["encoders"]["image"] == f"effnet-lite0-tuned@{SIZE}"
    # The title encoder's files are inside too (the folder predicts without the weight packages).
    assert saved["encoder_files"] == {
        f"effnet-lite0-tuned@{SIZE}": ENCODER_FILE,
        "minilm": "encoders/minilm/model.onnx",
    }
    assert (folder / ENCODER_FILE).stat().st_size > 1_000_000
    # Saving moved the file out of the training scratch folder: nothing piles up in the cache,
    # and the trained model now runs from the saved copy.
    assert list(tuned_scratch_dir().glob("*.onnx")) == []
    assert result.model.encoder_files == {
        saved["encoders"]["image"]: folder / ENCODER_FILE,
        "minilm": folder / "encoders" / "minilm" / "model.onnx",
    }
    summary = saved["options"]["fine_tune_whole_result"]
    scores = [h["validation"] for h in summary["history"]]
    assert len(scores) == 2 and summary["best_epoch"] == 1 + int(np.argmax(scores))
    # Watches and T-shirts look nothing alike: the tuned photo network and the model both work.
    assert max(scores) >= 0.9
    assert result.test["accuracy"] >= 0.95


def test_the_onnx_export_computes_what_the_tuned_torch_network_computes(
    tuned: tuple[TrainResult, Path], sample_catalogue: Catalogue
) -> None:
    import torch

    from prodcat.training.whole_network import pixels_batch

    result, folder = tuned
    model = Model.load(folder)
    encoder = model.get_encoder(model.image_encoder or "")
    products = _two_classes(sample_catalogue).products[:12]
    pixels = np.stack([encoder.preprocess(load_image(p.image or "")) for p in products])
    onnx_features = encoder.encode_arrays(pixels)
    assert result.tuned_network is not None  # `train` keeps the torch network for checks
    with torch.no_grad():
        torch_features = result.tuned_network[0].eval()(pixels_batch(pixels)).numpy()
    np.testing.assert_allclose(onnx_features, torch_features, rtol=1e-4, atol=1e-4)
    # ... and the network did change: the frozen one gives other features for the same photos.
    frozen = EfficientNetLiteEncoder("effnet-lite0", size=SIZE).encode_arrays(pixels)
    assert np.abs(frozen - onnx_features).mean() > 0.01


def test_saved_model_predicts_what_the_trained_one_did(
    tuned: tuple[TrainResult, Path], private_cache_dir: Path
) -> None:
    result, folder = tuned
    test = result.parts["test"]
    cache = FeatureCache(private_cache_dir / "features")
    # The same head (runtime torch); the features are cached under the saved file's hash, which
    # the load check matched: bit-identical. The Predictor below runs the saved file itself.
    reopened = Model.load(folder, runtime="torch")
    inputs, _ = reopened.encode(test, cache, progress=False)
    np.testing.assert_array_equal(reopened.predict_proba(inputs), result.test_proba)
    loaded = Model.load(folder)  # the head's ONNX graph: equal up to float rounding
    np.testing.assert_allclose(loaded.predict_proba(inputs), result.test_proba, atol=1e-6)
    # The in-memory path (predict, the REST API) runs the copy in the model folder the same way.
    items = [ProductInput(p.id, p.text, Path(p.image or "").read_bytes()) for p in test[:8]]
    answers = Predictor(loaded).predict(items)
    wanted = [format_path(p.label or ()) for p in test[:8]]
    assert [a.category for a in answers] == [
        result.model.classes[i] for i in result.test_proba[:8].argmax(axis=1)
    ]
    assert sum(a == w for a, w in zip([a.category for a in answers], wanted, strict=True)) >= 7


def test_a_swapped_photo_encoder_file_is_refused(
    tuned: tuple[TrainResult, Path], tmp_path: Path
) -> None:
    _, folder = tuned
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    # Another network of the same shape (the frozen one, exported) in place of the tuned one.
    frozen = EfficientNetLiteEncoder("effnet-lite0", size=SIZE)
    frozen.encode_arrays(np.zeros((1, SIZE, SIZE, 3), np.uint8))  # exports it
    shutil.copyfile(frozen.onnx_path, copy / ENCODER_FILE)
    with pytest.raises(ModelError, match="effnet-lite0-tuned@64"):
        Model.load(copy)
    (copy / ENCODER_FILE).unlink()
    with pytest.raises(ModelError, match="does not exist"):
        Model.load(copy)


def test_the_tuned_encoder_needs_its_file() -> None:
    with pytest.raises(ValueError, match="needs its onnx_file"):
        get_encoder("effnet-lite0-tuned@160")
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        get_encoder("effnet-lite0-tuned", onnx_file="x.onnx", backend="torch")


def test_an_unreadable_photo_is_reported_by_id_and_the_rest_are_decoded(
    sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    good = sample_catalogue.products[:3]
    bad = Product(id="bad-1", text="x", image=broken, label=good[0].label, image_sha256=None, row=9)
    products = [*good, bad]
    photos = decode_photos(
        products, [0, 1, 0, 1], EfficientNetLiteEncoder(size=SIZE), progress=False
    )
    assert photos.pixels.shape == (3, SIZE, SIZE, 3)
    assert photos.y.tolist() == [0, 1, 0]
    assert list(photos.errors) == ["bad-1"] and "bad-1" not in photos.errors["bad-1"]


def test_settings_and_options_reject_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="epochs=0"):
        WholeTuneSettings(epochs=0)
    with pytest.raises(ValueError, match="lr=0"):
        WholeTuneSettings(lr=0)
    with pytest.raises(ValueError, match="--fine-tune-whole trains the photo network"):
        TrainOptions(model="text-linear", fine_tune_whole=True)
    with pytest.raises(ValueError, match="not both"):
        TrainOptions(fine_tune=True, fine_tune_whole=True)


def test_the_cli_flag_trains_a_tuned_photo_model(
    sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    table = tmp_path / "small.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "image", "category"])
        for p in _two_classes(sample_catalogue).products[:120]:
            writer.writerow([p.id, p.text, p.image, format_path(p.label or ())])
    folder = tmp_path / "m"
    alone = runner.invoke(
        app, ["train", str(table), "--out", str(folder), "--fine-tune-epochs", "2"]
    )
    assert alone.exit_code == 2 and "pass both" in alone.output
    args = ["train", str(table), "--out", str(folder), "--model", "image", "--fine-tune-whole"]
    result = runner.invoke(app, [*args, "--fine-tune-epochs", "1", "--image-size", str(SIZE)])
    assert result.exit_code == 0, result.output
    assert "photo network fine-tuned on" in result.output and "epoch 1 of 1 kept" in result.output
    saved = json.loads((folder / "model.json").read_text())
    assert saved["head"] == "image" and saved["encoders"]["image"] == f"effnet-lite0-tuned@{SIZE}"
