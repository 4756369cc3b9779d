"""The Ray engine on a real cluster: a head and a second node started with `ray start` on
loopback (one CPU each), the bundled sample through `prodcat predict --engine ray` against the
local engine (answers and per-row errors), bad input over Ray, and `prodcat encode --engine ray`
filling the feature cache. Skipped where Ray is not installed (the base install)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from prodcat.catalogue import Catalogue
from prodcat.cli import app

pytest.importorskip("ray.data", reason="the Ray engine needs prodcat[ray]")

runner = CliRunner()


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two single-CPU nodes, 100 MB object stores, no dashboard; stopped at the end."""
    from prodcat.distributed.local import local_cluster

    with local_cluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1) as address:
        yield address


def write_shards(folder: Path, sample_dir: Path, rows: list[dict[str, str]]) -> Path:
    """`rows` as three shards (CSV, JSONL, Parquet) in `folder/input`, photos relative to each
    shard (`images/` is the sample's, linked)."""
    import pandas as pd

    shards = folder / "input"
    shards.mkdir(parents=True)
    (shards / "images").symlink_to(sample_dir / "images")
    third = len(rows) // 3
    parts = [rows[:third], rows[third : 2 * third], rows[2 * third :]]
    with (shards / "part-0.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(parts[0])
    with (shards / "part-1.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in parts[1])
    pd.DataFrame(parts[2]).to_parquet(shards / "part-2.parquet")
    return shards


def sample_rows(sample_dir: Path, n: int | None = None) -> list[dict[str, str]]:
    with (sample_dir / "products.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:n] if n else rows


def with_bad_rows(rows: list[dict[str, str]], folder: Path, sample_dir: Path) -> None:
    """A missing photo, a photo cut short (answered from the title), an empty id, a duplicate."""
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes((sample_dir / "images" / "3221.jpg").read_bytes()[:200])
    rows[1]["image"] = "images/no-such-photo.jpg"
    rows[2]["image"] = str(corrupt)
    rows[3]["id"] = ""
    rows[5]["id"] = rows[4]["id"]


def predict(model: Path, source: Path, out: Path, *extra: str) -> str:
    result = runner.invoke(app, ["predict", str(model), str(source), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_answers(local: list[dict], ray: list[dict]) -> None:
    """Row for row by id: the same category, decision, modalities and error, the same figures
    (to float rounding: batches differ)."""
    assert sorted(r["id"] for r in local) == sorted(r["id"] for r in ray)
    remote = {(r["id"], r["error"] or ""): r for r in ray}
    for row in local:
        other = remote[row["id"], row["error"] or ""]
        for key in ("predicted_category", "decision", "modalities", "error", "input_title"):
            assert other[key] == row[key], (row["id"], key)
        assert [t["category"] for t in other["top"]] == [t["category"] for t in row["top"]]
        if row["predicted_probability"] is not None:
            assert other["predicted_probability"] == pytest.approx(
                row["predicted_probability"], abs=1e-5
            )
            assert other["ood_score"] == pytest.approx(row["ood_score"], abs=1e-4)


def test_ray_engine_gives_the_local_answers_and_errors_on_the_sample(
    tmp_path: Path, sample_dir: Path, sample_model_dir: Path, ray_address: str
) -> None:
    rows = sample_rows(sample_dir)
    with_bad_rows(rows, tmp_path, sample_dir)
    rows[700]["id"] = rows[10]["id"]  # in part-1.jsonl an id part-0.csv used: shards are read apart
    shards = write_shards(tmp_path, sample_dir, rows)
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    local_said = predict(sample_model_dir, shards, local_out)
    ray_said = predict(
        sample_model_dir, shards, ray_out, "--engine", "ray", "--ray-address", ray_address
    )
    local, ray = read_jsonl(local_out), read_jsonl(ray_out)
    assert len(local) == len(rows) == 1501
    assert_same_answers(local, ray)
    answered = [[r["id"] for r in rows if r["predicted_category"]] for rows in (local, ray)]
    assert answered[1] == answered[0]  # in input order
    # The summary: its last two lines (the progress bars on stderr come before it).
    assert ray_said.splitlines()[-2].split(":")[0] == local_said.splitlines()[-2].split(":")[0]
    assert ray_said.splitlines()[-1] == local_said.splitlines()[-1]  # decisions and score
    assert "1,497 products labelled, 4 rows rejected (1 answered without their photo)" in ray_said
    errors = {r["id"]: r["error"] for r in ray if r["error"]}
    missing = errors[rows[1]["id"]]
    assert missing.startswith(f"part-0.csv line 3 (id {rows[1]['id']}), column 'image': ")
    assert "images/no-such-photo.jpg does not exist; expected a path relative to" in missing
    assert errors[rows[2]["id"]].startswith("image: ")
    empty_id = "part-0.csv line 5, column 'id': the id is empty; expected a unique product id"
    assert errors["line 5"] == empty_id
    assert f"the id {rows[4]['id']} was already used on line 6" in errors[rows[4]["id"]]
    twice = [r for r in ray if r["id"] == rows[10]["id"]]
    assert [bool(r["predicted_category"]) for r in twice] == [True, False]
    assert twice[1]["error"] == (
        f"part-1.jsonl line 201 (id {rows[10]['id']}), column 'id': the id {rows[10]['id']} was "
        "already used in part-0.csv line 12; ids must be unique across shards"
    )
    assert twice[1]["input_title"] == rows[10]["title"]  # the first row's, as locally


def test_ray_engine_writes_parquet_shards_and_csv_like_the_local_engine(
    tmp_path: Path, sample_dir: Path, sample_model_dir: Path, ray_address: str
) -> None:
    import pandas as pd

    rows = sample_rows(sample_dir, 60)
    with_bad_rows(rows, tmp_path, sample_dir)
    shards = write_shards(tmp_path, sample_dir, rows)
    ray_flags = ("--engine", "ray", "--ray-address", ray_address, "--workers", "2")
    predict(sample_model_dir, shards, tmp_path / "local.csv")
    predict(sample_model_dir, shards, tmp_path / "ray.csv", *ray_flags)
    local = pd.read_csv(tmp_path / "local.csv", dtype=str).sort_values("id")
    remote = pd.read_csv(tmp_path / "ray.csv", dtype=str).sort_values("id")
    assert list(remote.columns) == list(local.columns)
    same = ["id", "predicted_category", "decision", "true_category", "correct", "error", "top1"]
    assert remote[same].fillna("").values.tolist() == local[same].fillna("").values.tolist()
    predict(sample_model_dir, shards, tmp_path / "preds", *ray_flags)  # a folder of Parquet
    parts = sorted((tmp_path / "preds").iterdir())
    assert [p.name for p in parts] == ["part-00000.parquet"]
    table = pd.read_parquet(parts[0]).sort_values("id")
    assert table["id"].tolist() == local["id"].tolist()
    assert table["predicted_category"].tolist() == local["predicted_category"].fillna("").tolist()
    assert [len(t) for t in table["top"]] == [5 if c else 0 for c in table["predicted_category"]]


@pytest.mark.parametrize("broken", ["unreadable shard", "missing column"])
def test_bad_input_over_ray_gets_the_local_error(
    tmp_path: Path, sample_dir: Path, sample_model_dir: Path, ray_address: str, broken: str
) -> None:
    rows = sample_rows(sample_dir, 12)
    if broken == "missing column":
        for row in rows:
            row["sku"] = row.pop("id")
    shards = write_shards(tmp_path, sample_dir, rows)
    if broken == "unreadable shard":
        (shards / "part-1.jsonl").write_bytes(b'{"id": "1", "title": "caf\xe9"}\n')
    said = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.jsonl"
        flags = ["--engine", engine] + (["--ray-address", ray_address] if engine == "ray" else [])
        result = runner.invoke(
            app, ["predict", str(sample_model_dir), str(shards), "--out", str(out), *flags]
        )
        assert result.exit_code == 2, result.output
        assert not out.exists()
        said[engine] = [line for line in result.output.splitlines() if "error:" in line]
    assert len(said["ray"]) == 1
    assert said["ray"] == said["local"]
    expected = {
        "unreadable shard": "error: part-1.jsonl: not UTF-8 text (byte 25 cannot be decoded)",
        "missing column": "error: part-0.csv: ",
    }[broken]
    assert said["ray"][0].startswith(expected)
    if broken == "missing column":
        assert "(missing: ['id'])" in said["ray"][0]


def test_encode_on_ray_fills_the_cache_with_the_local_vectors(
    tmp_path: Path, sample_dir: Path, sample_catalogue: Catalogue, ray_address: str
) -> None:
    from prodcat.encoders.registry import get_encoder
    from prodcat.features.cache import FeatureCache, content_key
    from prodcat.features.encode import encode_products

    rows = sample_rows(sample_dir, 40)
    shards = write_shards(tmp_path, sample_dir, rows)
    cache_dir = tmp_path / "cache"
    ray_flags = ("--engine", "ray", "--ray-address", ray_address, "--workers", "2")
    command = ["encode", str(shards), "--cache-dir", str(cache_dir), *ray_flags]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "2 Ray workers of 1 CPU each; 0 rows rejected" in result.output
    ids = {row["id"] for row in rows}
    products = [p for p in sample_catalogue.products if p.id in ids]
    image, text = get_encoder("effnet-lite0"), get_encoder("minilm")
    here = encode_products(products, image, FeatureCache(tmp_path / "here"), progress=False)
    found, vectors = (
        FeatureCache(cache_dir).store(image.version).get([p.image_sha256 or "" for p in products])
    )
    assert found.all()
    assert np.allclose(vectors, here.lookup([p.id for p in products])[1], atol=1e-4)
    texts = FeatureCache(cache_dir).store(text.version)
    assert all(content_key(p.text) in texts for p in products)
    assert len(list(cache_dir.rglob("pack-*.safetensors"))) >= 2  # a pack per encoder at least


def test_the_ray_engine_without_ray_names_the_extra(tmp_path: Path, sample_csv: Path) -> None:
    """Ray made unimportable in a subprocess: the command says what to install."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from prodcat.cli import app\n"
        f"app(['encode', {str(sample_csv)!r}, '--engine', 'ray', '--cache-dir', {str(tmp_path)!r}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert done.returncode == 2, done.stderr
    assert 'pip install "prodcat[ray]"' in done.stderr


def test_the_steady_rate_sums_each_workers_own_rate_from_its_first_batch_to_its_last() -> None:
    """What benchmarks/scale.py divides for the scaling ratio: start-up excluded, gaps between a
    worker's batches included; rows of one batch share its span."""
    from prodcat.distributed.predict import RayRun, _note_workers
    from prodcat.gate.gate import DECISIONS
    from prodcat.model.predictions_file import Tally

    run = RayRun(Tally(DECISIONS), False, None)  # type: ignore[arg-type]
    batch = {
        "worker": np.array(["a"] * 3 + ["b"] * 2 + ["a"] * 2),
        "peak_mb": np.array([10.0, 10, 10, 20, 20, 12, 12]),
        "span": np.array([[100.0, 101]] * 3 + [[50.0, 52]] * 2 + [[103.0, 105]] * 2),
    }
    _note_workers(run, batch)
    assert run.spans == {"a": (100.0, 105.0, 5), "b": (50.0, 52.0, 2)}
    assert run.peak_mb == {"a": 12.0, "b": 20.0}
    assert run.steady_rows_per_s() == pytest.approx(5 / 5 + 2 / 2)
