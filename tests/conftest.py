"""Shared fixtures: the real sample catalogue bundled with the package."""

from __future__ import annotations

from pathlib import Path

import pytest

import prodcat
from prodcat.catalogue import Catalogue, load_catalogue


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
