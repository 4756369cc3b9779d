"""Answers from people fold into training: `--extra-labels` overrides catalogue labels, and a
model retrained with them answers differently for those products."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from prodcat.catalogue import Catalogue
from prodcat.catalogue.extra_labels import apply_extra_labels, read_labels_csv
from prodcat.cli import app
from prodcat.features.cache import FeatureCache
from prodcat.training.train import TrainOptions, train

OLD, NEW = "Accessories > Belts > Belts", "Accessories > Belts > Leather Belts"


def test_retraining_with_extra_labels_changes_those_predictions(
    tmp_path: Path, sample_catalogue: Catalogue, private_cache_dir: Path
) -> None:
    belts = [p for p in sample_catalogue.products if p.label and " > ".join(p.label) == OLD]
    assert len(belts) >= 40
    labels = tmp_path / "labels.csv"
    rows = [f"{p.id},{NEW},alice,2026-01-01T00:00:00Z,{OLD},false,true" for p in belts]
    header = "id,category,reviewer,time,model_suggestion,agreed,new_category"
    labels.write_text("\n".join([header, *rows]) + "\n")

    options = TrainOptions(model="text-linear", text_families=("l2",))
    cache = FeatureCache(private_cache_dir)
    before = train(sample_catalogue, options, cache=cache, progress=False).model
    relabelled, unknown = apply_extra_labels(sample_catalogue, read_labels_csv(labels))
    assert unknown == []
    after = train(relabelled, options, cache=cache, progress=False).model

    assert NEW not in before.classes and NEW in after.classes
    old_answers = [p.category for p in before.predict(belts, cache)]
    new_answers = [p.category for p in after.predict(belts, cache)]
    assert sum(c == OLD for c in old_answers) >= 0.9 * len(belts)
    assert sum(c == NEW for c in new_answers) >= 0.9 * len(belts)
    others = [p for p in sample_catalogue.products if p not in belts][:200]
    assert NEW not in {p.category for p in after.predict(others, cache)}


def test_train_extra_labels_flag_reports_a_bad_file(tmp_path: Path, sample_csv: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("product,label\n1,2\n")
    result = CliRunner().invoke(
        app, ["train", str(sample_csv), "--out", str(tmp_path / "m"), "--extra-labels", str(bad)]
    )
    assert result.exit_code == 2
    assert "missing column" in result.output and "id,category" in result.output
