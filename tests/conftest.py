"""Shared fixtures: the real sample catalogue bundled with the package.

The `base` marker selects the tests that need only the base install (predict, serve, the desk):
CI runs them in a fresh venv without torch (`.ci/base_install.sh`), against a model folder trained
in the full install and named by `PRODCAT_TEST_MODEL_DIR`, which `sample_model_dir` then returns
instead of training one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import prodcat
from prodcat.catalogue import Catalogue, load_catalogue

MODEL_DIR_ENV = "PRODCAT_TEST_MODEL_DIR"
# Test modules whose tests run in the base install too (`-m base`); a test in another module opts
# in with @pytest.mark.base, one here that needs the training parts opts out with `needs_train`.
BASE_MODULES = {
    "test_serving",
    "test_inference",
    "test_desk_audit",
    "test_desk_cli",
    "test_desk_queue",
    "test_desk_server",
}


# In the base install (no torch) the other modules cannot even be imported: collect only these.
if importlib.util.find_spec("torch") is None:
    collect_ignore = [
        path.name
        for path in Path(__file__).parent.glob("test_*.py")
        if path.stem not in BASE_MODULES | {"test_slim"}
    ]


# Tests of those modules that compare with torch, so need the training parts.
NEEDS_TRAIN = {"test_inference.py::test_onnx_head_gives_the_torch_heads_probabilities"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem not in BASE_MODULES or item.get_closest_marker("needs_train"):
            continue
        if f"{item.path.name}::{item.name}" not in NEEDS_TRAIN:
            item.add_marker(pytest.mark.base)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The folder of the bundled sample: products.csv and images/<id>.jpg."""
    return Path(prodcat.__file__).parent / "data" / "sample"


@pytest.fixture(scope="session")
def sample_csv(sample_dir: Path) -> Path:
    return sample_dir / "products.csv"


@pytest.fixture(scope="session")
def sample_catalogue(sample_csv: Path) -> Catalogue:
    """The sample, loaded once per session with every image verified; do not mutate it."""
    return load_catalogue(sample_csv)


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test writes exported encoders and features into its own session folder, never into
    the user's cache: what a test exports, it has made itself."""
    folder = tmp_path_factory.mktemp("prodcat-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("PRODCAT_CACHE_DIR", str(folder))
    yield folder
    patcher.undo()


@pytest.fixture(scope="session")
def sample_model_dir(
    tmp_path_factory: pytest.TempPathFactory, sample_catalogue: Catalogue, private_cache_dir: Path
) -> Path:
    """A fusion model trained once per session on the sample (seed 0) and saved; read it only.

    With `PRODCAT_TEST_MODEL_DIR` set, that folder instead (trained alike, in another venv)."""
    given = os.environ.get(MODEL_DIR_ENV, "").strip()
    if given:
        return Path(given)
    from prodcat.features.cache import FeatureCache
    from prodcat.training.train import TrainOptions, train

    result = train(
        sample_catalogue,
        TrainOptions(model="fusion-blend", seed=0),
        cache=FeatureCache(private_cache_dir),
    )
    return result.model.save(tmp_path_factory.mktemp("sample-model") / "fusion")


# -- the review desk (tests/test_desk_*.py; helpers in tests/desk_support.py) ------------------
@pytest.fixture(scope="session")
def desk_predictions(sample_model_dir: Path, sample_catalogue: Catalogue, private_cache_dir: Path):
    """The sample model's predictions over the whole sample, computed once: the desk's queue."""
    from prodcat.features.cache import FeatureCache
    from prodcat.model.bundle import Model

    model = Model.load(sample_model_dir)
    return model, model.predict(sample_catalogue.products, FeatureCache(private_cache_dir))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server started for this session on a random loopback port."""
    from desk_support import postgres_available, postgres_server

    why_not = postgres_available()
    if why_not:
        pytest.skip(why_not)
    with postgres_server() as url:
        yield url
