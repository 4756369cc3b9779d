"""Same seed, same figures: a whole training (`prodcat.training.train.train`) run twice on the
bundled sample gives the same model. Each head's own check is in tests/test_heads.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue import Catalogue
from prodcat.features.cache import FeatureCache
from prodcat.training.train import TrainOptions, TrainResult, train


def _trials(result: TrainResult) -> list[tuple[Any, ...]]:
    report = result.model.head.validation_report_
    return [(t["family"], t["params"], t["val_accuracy"]) for t in report["trials"]]


def test_training_the_title_model_twice_gives_the_same_model(
    sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    """The demo's title-only model: all three families are searched (the l1 one wins on the
    sample). Two `prodcat demo` runs once gave 96.15% and 95.38% test accuracy: liblinear drew
    its seed from numpy's global generator."""
    results = []
    for run in range(2):
        np.random.random(3)  # a run must not depend on numpy's global generator
        cache = FeatureCache(tmp_path / f"cache-{run}")
        options = TrainOptions(model="text-linear", seed=0)
        results.append(train(sample_catalogue, options, cache=cache))
    first, second = results
    assert {family for family, _, _ in _trials(first)} == {"l2", "l1", "rf"}
    assert _trials(first) == _trials(second)
    assert np.array_equal(first.test_proba, second.test_proba)
    assert first.model.figures["test"] == second.model.figures["test"]
    gates = first.model.gate, second.model.gate
    assert gates[0] is not None and gates[1] is not None
    assert gates[0].accept_thresholds == gates[1].accept_thresholds
    assert gates[0].temperatures == gates[1].temperatures
