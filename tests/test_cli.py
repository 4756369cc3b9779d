"""The `prodcat` command itself: light to start, flags shown as flags, errors on one line, the
label-column hint, class counts that add up, the predictions file, the demo's sample copy."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import prodcat
from prodcat.catalogue import load_catalogue
from prodcat.cli import app, common
from prodcat.cli.demo import copy_sample, sample_folder

runner = CliRunner()

HEAVY = (
    "numpy",
    "torch",
    "pandas",
    "sklearn",
    "matplotlib",
    "fastapi",
    "onnxruntime",
    "sqlalchemy",
    "PIL",
    "prodcat.catalogue",
    "prodcat.model",
    "prodcat.training",
    "prodcat.report",
    "prodcat.serving",
    "prodcat.desk",
)


def run_cli(*args: str, columns: int = 40) -> subprocess.CompletedProcess[str]:
    """`python -m prodcat.cli ARGS` in its own process, in a terminal `columns` wide."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "prodcat.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def labelled_table(folder: Path, sample_dir: Path, header: dict[str, str], n: int = 30) -> Path:
    """The first `n` sample rows with absolute photo paths and the columns renamed by `header`."""
    with (sample_dir / "products.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:n]
    table = folder / "products.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([header.get(c, c) for c in rows[0]])
        for row in rows:
            writer.writerow([str(sample_dir / v) if c == "image" else v for c, v in row.items()])
    return table


# -- start-up, version, help -------------------------------------------------------------------


def test_the_command_imports_no_heavy_module_until_one_runs() -> None:
    """`prodcat --help` answers in ~0.1 s because importing the CLI loads typer and rich only."""
    probe = "import sys, prodcat.cli; print(','.join(m for m in sys.argv[1:] if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe, *HEAVY], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"prodcat {prodcat.__version__}"


@pytest.mark.parametrize("command", [[], ["check"], ["train"], ["predict"], ["review"]])
def test_help_shows_flags_bare_and_values_by_name(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<str>" not in result.output
    flags = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if line}
    assert flags["--help"][0] == "Show"  # a flag: no value between the name and its help
    if command == ["check"]:
        assert flags["--json"][0] == "Print" and flags["--label-column"][0] == "COLUMN"
    if command == ["train"]:
        assert flags["--fine-tune"][0] == "Also" and flags["--out"][0] == "FOLDER"


def test_the_defaults_the_help_shows_are_the_real_ones() -> None:
    from prodcat.catalogue.classes import DEFAULT_MIN_CLASS_COUNT
    from prodcat.desk.db import DEFAULT_DB
    from prodcat.gate.gate import DEFAULT_TARGET_ACCURACY
    from prodcat.training.train import TrainOptions

    assert common.DEFAULT_TARGET_ACCURACY == DEFAULT_TARGET_ACCURACY
    assert TrainOptions.fine_tune_epochs == common.DEFAULT_FINE_TUNE_EPOCHS
    assert common.DEFAULT_MIN_CLASS_COUNT == DEFAULT_MIN_CLASS_COUNT
    assert common.DEFAULT_DB == DEFAULT_DB


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [40, 200])
def test_errors_are_printed_on_one_line(tmp_path: Path, sample_dir: Path, columns: int) -> None:
    """Our errors and typer's own: one line each, whatever the terminal's width."""
    missing = tmp_path / "a-catalogue-with-a-rather-long-name-that-does-not-exist.csv"
    result = run_cli("check", str(missing), columns=columns)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {missing}: no such file or folder"]
    result = run_cli("check", str(missing), "--no-such-option-anywhere", columns=columns)
    assert result.returncode == 2
    assert "Error: No such option: --no-such-option-anywhere" in result.stderr.splitlines()
    table = labelled_table(tmp_path, sample_dir, {"category": "Category"})
    result = run_cli("check", str(table), columns=columns)
    assert result.returncode == 2
    expected = (
        "error: products.csv: no column 'category'; did you mean 'Category'? pass "
        "--label-column Category (columns found: ['id', 'title', 'image', 'Category', 'gender', "
        "'baseColour'])"
    )
    assert result.stderr.splitlines() == [expected]


# -- the label column ----------------------------------------------------------------------------


def test_a_misspelt_label_column_is_named_by_check_and_train(
    tmp_path: Path, sample_dir: Path
) -> None:
    table = labelled_table(tmp_path, sample_dir, {"category": "Category"})
    check = runner.invoke(app, ["check", str(table), "--json"])
    assert check.exit_code == 2
    assert "no column 'category'; did you mean 'Category'? pass --label-column Category" in (
        check.output
    )
    train = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "model")])
    assert train.exit_code == 2 and not (tmp_path / "model").exists()
    assert "expected the columns ['id', 'title', 'image', 'category']" in train.output
    assert "['id', 'title', 'image', 'Category', 'gender', 'baseColour'] were found" in (
        train.output
    )
    assert "did you mean 'Category' for 'category'? pass --label-column Category" in train.output
    fixed = runner.invoke(app, ["check", str(table), "--json", "--label-column", "Category"])
    assert fixed.exit_code == 0, fixed.output
    summary = json.loads(fixed.stdout)
    assert summary["labelled"] is True and summary["n_products"] == 30


def test_an_unlabelled_catalogue_is_still_fine(tmp_path: Path, sample_dir: Path) -> None:
    """No label column and none named like it: unlabelled, as before (and `train` says why not)."""
    table = labelled_table(tmp_path, sample_dir, {"category": "articleType"})
    check = runner.invoke(app, ["check", str(table), "--json"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["labelled"] is False
    train = runner.invoke(app, ["train", str(table), "--out", str(tmp_path / "model")])
    assert train.exit_code == 2
    assert "(missing: ['category']); pass --id-column" in train.output


# -- class counts ----------------------------------------------------------------------------------


def test_check_says_which_classes_a_default_training_learns(sample_csv: Path) -> None:
    result = runner.invoke(app, ["check", str(sample_csv), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    plan = summary["training"]
    assert summary["n_classes"] == 29
    assert (plan["n_learned"], plan["n_left_out"]) == (20, 9)
    assert plan["n_learned"] + plan["n_left_out"] == summary["n_classes"]
    assert plan["rule"] == "at least 5 training products"
    # Two classes have all their products in the validation / test parts: 0 training products.
    assert sorted(n for n in plan["left_out"].values()) == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert plan["left_out"]["Free Items > Free Gifts > Handbags"] == 0
    assert all(n < 5 for n in plan["left_out"].values())


# -- predict -------------------------------------------------------------------------------------


def test_predict_answers_a_product_with_an_unreadable_photo_from_its_title(
    tmp_path: Path, sample_dir: Path, sample_model_dir: Path
) -> None:
    table = labelled_table(tmp_path, sample_dir, {}, n=12)
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    corrupt = tmp_path / "corrupt.jpg"
    # A real JPEG cut short: the header reads, the pixels do not.
    corrupt.write_bytes((sample_dir / "images" / "3221.jpg").read_bytes()[:200])
    rows[4]["image"] = str(corrupt)
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "labels.csv"
    result = runner.invoke(app, ["predict", str(sample_model_dir), str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 products labelled, 0 rows rejected (1 answered without their photo)" in (
        result.output
    )
    answers = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [a["id"] for a in answers] == [r["id"] for r in rows]
    broken = answers[4]
    assert broken["error"].startswith("image: ") and broken["modalities"] == "text"
    assert broken["predicted_category"] == rows[4]["category"]  # "... Blue Backpack"
    assert all(
        a["error"] == "" and a["modalities"] == "image+text"
        for i, a in enumerate(answers)
        if i != 4
    )


def test_the_predictions_file_joins_cleanly_and_carries_the_truth(
    tmp_path: Path, sample_dir: Path, sample_model_dir: Path
) -> None:
    table = labelled_table(tmp_path, sample_dir, {}, n=40)
    out = tmp_path / "labels.csv"
    result = runner.invoke(app, ["predict", str(sample_model_dir), str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with table.open(encoding="utf-8") as handle:
        inputs = {r["id"]: r for r in csv.DictReader(handle)}
    with out.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        answers = list(reader)
        columns = list(reader.fieldnames or [])
    assert set(columns) & set(next(iter(inputs.values()))) == {"id"}  # joins on id alone
    assert columns[:7] == [
        "id",
        "input_title",
        "predicted_category",
        "predicted_probability",
        "decision",
        "true_category",
        "correct",
    ]
    for answer in answers:
        given = inputs[answer["id"]]
        assert answer["input_title"] == given["title"]
        assert answer["true_category"] == given["category"]
        right = answer["predicted_category"] == given["category"]
        assert answer["correct"] == ("true" if right else "false")
    n_correct = sum(a["correct"] == "true" for a in answers)
    assert n_correct >= 36  # 40 training products of a 96%-accurate model
    assert f"{n_correct} of 40 correct (the file has labels)" in result.output
    jsonl = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["predict", str(sample_model_dir), str(table), "--out", str(jsonl)])
    assert result.exit_code == 0, result.output
    first = json.loads(jsonl.read_text(encoding="utf-8").splitlines()[0])
    assert first["input_title"] == inputs[first["id"]]["title"]
    assert first["correct"] is (first["predicted_category"] == first["true_category"])
    assert len(first["top"]) == 5


# -- the demo's sample -----------------------------------------------------------------------------


def test_the_demo_copies_the_sample_beside_its_models(tmp_path: Path) -> None:
    table = copy_sample(tmp_path / "prodcat-demo")
    assert table == tmp_path / "prodcat-demo" / "sample" / "products.csv"
    shipped = sorted(p.name for p in (sample_folder() / "images").iterdir())
    assert sorted(p.name for p in (table.parent / "images").iterdir()) == shipped
    assert (table.parent / "README.md").read_text(encoding="utf-8").startswith("# The bundled")
    copied = load_catalogue(table)
    assert len(copied.products) == 1501 and copied.rejected == []


def test_encode_says_which_rows_it_rejected(tmp_path: Path, sample_dir: Path) -> None:
    """A row that is not a product is named, never dropped silently; the others are encoded."""
    lines = (sample_dir / "products.csv").read_text(encoding="utf-8").splitlines()
    header, good = lines[0], lines[1:3]
    blank_id = "," + good[0].split(",", 1)[1]
    (tmp_path / "products.csv").write_text("\n".join([header, *good, blank_id]) + "\n")
    (tmp_path / "images").symlink_to(sample_dir / "images")
    command = ["encode", str(tmp_path / "products.csv"), "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "rejected: products.csv line 4, column 'id': the id is empty" in said
    assert "1 rows rejected" in said
    from prodcat.encoders.registry import get_encoder
    from prodcat.features.cache import FeatureCache, content_key

    titles = FeatureCache(tmp_path / "cache").store(get_encoder("minilm").version)
    encoded = load_catalogue(tmp_path / "products.csv", verify_images=False).products
    assert len(encoded) == 2 and all(content_key(p.text) in titles for p in encoded)


def test_encode_refuses_a_bag_of_words_with_the_reason(tmp_path: Path, sample_dir: Path) -> None:
    command = ["encode", str(sample_dir / "products.csv"), "--text-encoder", "tfidf"]
    result = runner.invoke(app, [*command, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "error: tfidf is fitted on the training titles by the head that reads it" in said
    assert not (tmp_path / "cache").exists()
