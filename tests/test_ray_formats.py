"""The inputs and outputs both engines share (no Ray needed): a folder of table shards with
photo paths relative to each shard, and predictions as Parquet, CSV, JSONL or a folder of shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from prodcat.catalogue import load_catalogue
from prodcat.cli import app
from prodcat.model.prediction import Prediction
from prodcat.model.predictions_file import (
    PredictionsWriter,
    Target,
    parse_target,
    prediction_record,
)

runner = CliRunner()


def sample_rows(sample_dir: Path, n: int) -> list[dict[str, str]]:
    with (sample_dir / "products.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))[:n]


def test_a_folder_of_shards_reads_each_table_with_photos_relative_to_it(
    tmp_path: Path, sample_dir: Path
) -> None:
    rows = sample_rows(sample_dir, 9)
    shards = tmp_path / "shards"
    (shards / "b").mkdir(parents=True)
    (shards / "images").symlink_to(sample_dir / "images")
    (shards / "b" / "pics").symlink_to(sample_dir / "images")
    with (shards / "a.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:3])
    moved = [{**r, "image": r["image"].replace("images/", "b/pics/")} for r in rows[3:6]]
    (shards / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in moved))
    rows[7]["image"] = "images/gone.jpg"
    pd.DataFrame(rows[6:]).to_parquet(shards / "c.parquet")
    (shards / "notes.txt").write_text("not a table")  # ignored: only tables are shards
    cat = load_catalogue(shards)
    assert [p.id for p in cat.products] == [r["id"] for i, r in enumerate(rows) if i != 7]
    assert cat.products[3].image == (sample_dir / rows[3]["image"]).resolve()
    assert [p.message for p in cat.rejected] == [
        f"c.parquet row 2 (id {rows[7]['id']}), column 'image': the file images/gone.jpg does "
        f"not exist; expected a path relative to {shards.resolve()}"
    ]
    assert cat.labelled


def test_an_unreadable_shard_names_itself(tmp_path: Path, sample_dir: Path) -> None:
    from prodcat.catalogue import CatalogueError

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.csv").write_text("id,title,image\n1,Blue Shirt,\n", encoding="utf-8")
    (shards / "b.csv").write_bytes(b"id,title,image\n2,caf\xe9,\n")
    with pytest.raises(CatalogueError, match=r"^b\.csv: not UTF-8 text \(byte 20 "):
        load_catalogue(shards)


def test_an_id_used_in_an_earlier_shard_is_refused_like_one_used_twice_in_a_shard(
    tmp_path: Path,
) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.csv").write_text("id,title,image\n1,Blue Shirt,\n2,Red Cap,\n", "utf-8")
    (shards / "b.csv").write_text("id,title,image\n3,Green Bag,\n1,Black Shoe,\n", "utf-8")
    cat = load_catalogue(shards)
    assert [(p.id, p.text) for p in cat.products] == [
        ("1", "Blue Shirt"),
        ("2", "Red Cap"),
        ("3", "Green Bag"),
    ]
    (duplicate,) = [p for p in cat.rejected if p.kind == "duplicate_id"]
    assert (duplicate.source, duplicate.row, duplicate.id) == ("b.csv", 3, "1")
    assert duplicate.message == (
        "b.csv line 3 (id 1), column 'id': the id 1 was already used in a.csv line 2; ids must "
        "be unique across shards"
    )


@pytest.mark.parametrize(
    ("given", "suffix", "folder"),
    [
        ("p.parquet", ".parquet", False),
        ("p.CSV", ".csv", False),
        ("p.jsonl", ".jsonl", False),
        ("preds", ".parquet", True),
        ("preds/", ".parquet", True),
        ("preds.csv/", ".csv", True),
    ],
)
def test_the_output_is_a_file_or_a_folder_of_shards(
    tmp_path: Path, given: str, suffix: str, folder: bool
) -> None:
    target = parse_target(f"{tmp_path}/{given}")
    assert (target.suffix, target.folder) == (suffix, folder)


def test_an_output_that_cannot_be_written_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown file format '\.txt'; expected a \.parquet"):
        parse_target(tmp_path / "p.txt")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds predictions"):
        parse_target(f"{tmp_path}/old/")


def answer(i: int) -> Prediction:
    return Prediction(
        id=str(i),
        category="A > B",
        probability=0.5 + i / 100,
        level_probabilities=[0.9, 0.5 + i / 100],
        top=[("A > B", 0.5 + i / 100), ("A > C", 0.25)],
        decision="accept",
        ood_score=None if i % 2 else 0.125,
        modalities=["image", "text"],
    )


def test_a_folder_of_shards_rolls_over_and_every_format_holds_the_same_rows(
    tmp_path: Path,
) -> None:
    records = [prediction_record(answer(i), None, False) for i in range(5)]
    with PredictionsWriter(Target(tmp_path / "j", ".jsonl", True), False, shard_rows=2) as w:
        w.write(records[:3])
        w.write(records[3:])
    parts = sorted((tmp_path / "j").iterdir())
    assert [p.name for p in parts] == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    back = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
    assert back == records
    with PredictionsWriter(parse_target(tmp_path / "p.parquet"), False) as w:
        w.write(records)
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert table["id"].tolist() == ["0", "1", "2", "3", "4"]
    assert table["ood_score"].isna().tolist() == [False, True, False, True, False]
    assert [list(t) for t in table["level_probabilities"]] == [
        r["level_probabilities"] for r in records
    ]
    assert [[dict(x) for x in t] for t in table["top"]] == [r["top"] for r in records]


def test_predict_writes_parquet_with_the_answers_of_the_jsonl(
    tmp_path: Path, sample_csv: Path, sample_dir: Path, sample_model_dir: Path
) -> None:
    rows = sample_rows(sample_dir, 10)
    rows[2]["id"] = ""
    table = tmp_path / "in.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "images").symlink_to(sample_dir / "images")
    said = {}
    for name in ("p.jsonl", "p.parquet"):
        command = ["predict", str(sample_model_dir), str(table), "--out", str(tmp_path / name)]
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        said[name] = result.output.splitlines()[-1]
    assert said["p.jsonl"] == said["p.parquet"]
    jsonl = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    parquet = pd.read_parquet(tmp_path / "p.parquet")
    assert parquet["id"].tolist() == [r["id"] for r in jsonl]
    assert parquet["predicted_category"].tolist() == [r["predicted_category"] for r in jsonl]
    assert parquet["correct"].tolist()[:9] == [r["correct"] for r in jsonl][:9]
    assert (
        parquet["error"].tolist()[-1]
        == jsonl[-1]["error"]
        == ("in.csv line 4, column 'id': the id is empty; expected a unique product id")
    )


def test_a_run_that_fails_leaves_no_half_written_predictions(tmp_path: Path) -> None:
    records = [prediction_record(answer(i), None, False) for i in range(5)]
    (tmp_path / "p.csv").write_text("the previous run's file\n")
    for target in (parse_target(tmp_path / "p.csv"), parse_target(f"{tmp_path}/shards/")):
        with pytest.raises(RuntimeError), PredictionsWriter(target, False, shard_rows=2) as w:
            w.write(records)
            raise RuntimeError("a worker died")
    assert (tmp_path / "p.csv").read_text() == "the previous run's file\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["p.csv", "shards"]
