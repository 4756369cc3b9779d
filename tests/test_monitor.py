"""The drift alarm: the tests and Holm's correction on synthetic data with a known answer, the
reference stored with the model, and `prodcat monitor` on the bundled sample: its own test part
gives no drift; foreign classes, a single class, missing titles and larger photos each give drift
for the right reason."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prodcat.catalogue import Catalogue, Product
from prodcat.catalogue.split import split_catalogue
from prodcat.cli import app
from prodcat.features.cache import FeatureCache
from prodcat.model.bundle import Model
from prodcat.monitor import DriftReport, Observations, Reference, RollingWindow, compare
from prodcat.monitor.drift import holm, pool_sparse
from prodcat.monitor.reference import MAX_SAMPLE, REFERENCE_FILE
from prodcat.taxonomy.tree import format_path
from prodcat.training.train import TrainOptions, train

runner = CliRunner()
# Classes the foreign-class model never sees (distinct kinds of product, not name variants).
FOREIGN = ("Watches", "Sunglasses", "Belts", "Wallets", "Perfume and Body Mist")


def synthetic(n: int, rng: np.random.Generator, *, ood_shift: float = 0.0) -> Observations:
    return Observations(
        decisions=rng.choice(["accept", "review", "unknown"], size=n, p=[0.9, 0.08, 0.02]),
        confidence=rng.beta(20, 1, n),
        ood_score=rng.normal(ood_shift, 1, n),
        predicted=rng.integers(0, 8, n),
        has_photo=rng.random(n) < 0.97,
        has_title=rng.random(n) < 0.99,
        photo_side=rng.choice([80.0, 100.0, 640.0], size=n, p=[0.8, 0.15, 0.05]),
    )


# -- the statistics --------------------------------------------------------------------------
def test_holm_matches_a_hand_computation() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, then kept monotone


def test_batches_like_the_reference_raise_at_most_alpha_false_alarms() -> None:
    rng = np.random.default_rng(1)
    reference = Reference.build(synthetic(4000, rng), 8)
    alarms = sum(compare(reference, synthetic(500, rng)).drift for _ in range(300))
    # alpha 0.01 over all signals: about 3 expected at most, the tests being conservative.
    assert alarms <= 4


def test_a_shifted_distribution_is_found_and_named() -> None:
    rng = np.random.default_rng(2)
    reference = Reference.build(synthetic(4000, rng), 8)
    report = compare(reference, synthetic(500, rng, ood_shift=0.5))
    assert report.drift and [s for s in report.signals if report.signals[s].fired] == ["ood_score"]
    assert report.reasons[0].startswith("OOD score: distribution differs")
    assert report.signals["ood_score"].p_adjusted <= report.alpha


def test_sparse_classes_are_pooled_for_the_chi_square() -> None:
    table = np.array([[50.0, 40.0, 1.0, 2.0, 0.0], [500.0, 400.0, 10.0, 20.0, 0.0]])
    pooled = pool_sparse(table)
    # the empty class goes, the two small ones (expected 1.0 and 2.0) are pooled: still under 5,
    # so the pool joins the smallest kept class
    assert pooled.tolist() == [[50.0, 43.0], [500.0, 430.0]]


def test_reference_is_bounded_and_round_trips(tmp_path: Path) -> None:
    obs = synthetic(20_000, np.random.default_rng(3))
    reference = Reference.build(obs, 8)
    assert all(len(v) == MAX_SAMPLE for v in reference.samples.values())
    assert reference.finite["confidence"] == 20_000 and reference.n == 20_000
    assert sum(reference.decisions.values()) == sum(reference.class_counts) == 20_000
    path = reference.save(tmp_path / REFERENCE_FILE)
    assert path.stat().st_size < 100_000
    assert Reference.load(path) == reference


def test_bad_observations_and_references_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="confidence has 2 values but decisions has 3"):
        Observations(np.array(["accept"] * 3), [0.9, 0.8], [0, 0, 0], [0, 1, 2], [1] * 3,
                     [1] * 3, [80] * 3)  # fmt: skip
    with pytest.raises(ValueError, match=r"decision\(s\) \['maybe'\] are not one of"):
        Observations(np.array(["maybe"]), [0.9], [0], [0], [1], [1], [80])
    obs = synthetic(50, np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"expected 0\.\.6"):
        Reference.build(obs, 7)
    (tmp_path / "r.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="has format 99; this prodcat reads format 1"):
        Reference.load(tmp_path / "r.json")


def test_rolling_window_keeps_only_the_latest_products() -> None:
    rng = np.random.default_rng(5)
    window = RollingWindow(100)
    first, second = synthetic(80, rng), synthetic(80, rng)
    window.add(first)
    window.add(second)
    kept = window.observations()
    assert len(window) == 100 and window.seen == 160
    assert np.array_equal(kept.confidence[-80:], second.confidence)
    assert np.array_equal(kept.confidence[:20], first.confidence[-20:])


# -- on the sample ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_model(sample_model_dir: Path) -> Model:
    return Model.load(sample_model_dir)


@pytest.fixture(scope="module")
def sample_parts(sample_catalogue: Catalogue) -> dict[str, list[Product]]:
    return split_catalogue([p for p in sample_catalogue.products if p.label])


def check(model: Model, products: list[Product], cache_dir: Path) -> DriftReport:
    inputs, _ = model.encode(products, FeatureCache(cache_dir), progress=False)
    assert model.reference is not None
    return compare(model.reference, model.observe(products, inputs), class_names=model.classes)


def fired(report: DriftReport) -> set[str]:
    return {name for name, signal in report.signals.items() if signal.fired}


def test_training_stores_a_small_reference_of_the_validation_part(
    sample_model: Model, sample_model_dir: Path, sample_parts: dict[str, list[Product]]
) -> None:
    reference = sample_model.reference
    assert reference is not None
    assert reference.n == len(sample_parts["validation"])
    assert reference.has_title == sum(bool(p.text) for p in sample_parts["validation"])
    assert len(reference.class_counts) == len(sample_model.classes)
    assert set(reference.samples) == {"confidence", "ood_score", "photo_side"}
    assert set(reference.samples["photo_side"]) == {80.0}  # the sample's 60 x 80 thumbnails
    assert (sample_model_dir / REFERENCE_FILE).stat().st_size < 50_000


def test_a_model_without_a_reference_still_loads(sample_model_dir: Path, tmp_path: Path) -> None:
    old = shutil.copytree(sample_model_dir, tmp_path / "old")
    (old / REFERENCE_FILE).unlink()
    assert Model.load(old).reference is None
    result = runner.invoke(app, ["monitor", str(old), str(tmp_path / "none.csv")])
    assert result.exit_code == 2
    assert "holds no drift reference" in result.output and "retrain" in result.output


def test_the_samples_own_test_part_gives_no_drift(
    sample_model_dir: Path, sample_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "drift.json"
    args = ["monitor", str(sample_model_dir), str(sample_csv), "--part", "test", "--json", str(out)]
    result = runner.invoke(app, [*args, "--fail-on-drift"])
    assert result.exit_code == 0, result.output
    assert "no drift: 9 signals" in result.output
    verdict = json.loads(out.read_text())
    assert verdict["drift"] is False and verdict["reasons"] == []
    assert len(verdict["signals"]) == 9
    assert all(s["p_adjusted"] > 0.01 for s in verdict["signals"].values())
    assert 0.5 < verdict["accuracy"]["accuracy"] <= 1.0  # labels present: accuracy reported


def test_one_class_only_drifts_on_the_class_mix(
    sample_model: Model, sample_parts: dict[str, list[Product]], private_cache_dir: Path
) -> None:
    batch = [
        p
        for p in sample_parts["validation"] + sample_parts["test"]
        if p.label and p.label[-1] == "Tshirts"
    ]
    report = check(sample_model, batch, private_cache_dir)
    assert "class_mix" in fired(report)
    assert any(r.startswith("class mix:") and "Tshirts" in r for r in report.reasons)


def test_missing_titles_drift_on_the_title_share(
    sample_model: Model, sample_parts: dict[str, list[Product]], private_cache_dir: Path
) -> None:
    batch = [dataclasses.replace(p, text="") for p in sample_parts["test"]]
    report = check(sample_model, batch, private_cache_dir)
    assert "title_share" in fired(report)
    assert report.signals["title_share"].batch == 0.0
    assert report.signals["title_share"].reference == 1.0


def test_photos_of_another_resolution_drift_on_the_photo_size(
    sample_model_dir: Path,
    sample_csv: Path,
    sample_parts: dict[str, list[Product]],
    tmp_path: Path,
) -> None:
    """The sample's own 60 x 80 photos, enlarged 4x, through `prodcat monitor`."""
    (tmp_path / "images").mkdir()
    lines = sample_csv.read_text().splitlines()
    test_ids = {p.id for p in sample_parts["test"]}
    kept = [lines[0]]
    for line in lines[1:]:
        pid = line.split(",", 1)[0]
        if pid not in test_ids:
            continue
        with Image.open(sample_csv.parent / "images" / f"{pid}.jpg") as img:
            img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC).save(
                tmp_path / "images" / f"{pid}.jpg", quality=90
            )
        kept.append(line)
    (tmp_path / "products.csv").write_text("\n".join(kept) + "\n")
    out = tmp_path / "drift.json"
    result = runner.invoke(
        app,
        ["monitor", str(sample_model_dir), str(tmp_path / "products.csv"), "--json", str(out),
         "--fail-on-drift"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "DRIFT:" in result.output and "photo size: distribution differs" in result.output
    verdict = json.loads(out.read_text())
    assert verdict["drift"] is True and verdict["signals"]["photo_side"]["drift"] is True
    assert verdict["signals"]["photo_side"]["batch"]["median"] == 320.0


@pytest.fixture(scope="module")
def foreign_model(
    sample_catalogue: Catalogue, private_cache_dir: Path
) -> tuple[Model, list[Product], list[Product]]:
    """A model trained without five kinds of product; its unseen in-class products (validation
    and test parts) and the foreign products."""
    known = [p for p in sample_catalogue.products if not _is_foreign(p)]
    result = train(
        dataclasses.replace(sample_catalogue, products=known),
        TrainOptions(model="fusion-blend", seed=0),
        cache=FeatureCache(private_cache_dir),
        progress=False,
    )
    foreign = [p for p in sample_catalogue.products if _is_foreign(p)]
    return result.model, result.parts["validation"] + result.parts["test"], foreign


def _is_foreign(product: Product) -> bool:
    return bool(product.label) and format_path(product.label or ()).endswith(FOREIGN)


def test_ten_percent_foreign_products_drift_on_the_unknown_share(
    foreign_model: tuple[Model, list[Product], list[Product]], private_cache_dir: Path
) -> None:
    model, known, foreign = foreign_model
    assert not any(c.endswith(FOREIGN) for c in model.classes)
    rng = np.random.default_rng(0)
    extra = [foreign[i] for i in rng.choice(len(foreign), size=len(known) // 9, replace=False)]
    batch = known + extra  # 10% of the batch is of classes the model lacks
    report = check(model, batch, private_cache_dir)
    assert "unknown_share" in fired(report)
    assert report.signals["unknown_share"].batch > 3 * report.signals["unknown_share"].reference
    assert not check(model, known, private_cache_dir).drift  # the same batch without them


def test_monitor_help_and_the_default_it_shows() -> None:
    from prodcat.cli import monitor as command
    from prodcat.monitor import DEFAULT_ALPHA

    assert command.DEFAULT_ALPHA == DEFAULT_ALPHA
    result = runner.invoke(app, ["monitor", "--help"])
    assert result.exit_code == 0, result.output
    flags = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if line}
    assert flags["--fail-on-drift"][0] == "Exit" and flags["--json"][0] == "FILE"
