"""Planted label noise, to measure the audit: flip a share of the labels, seeded.

Half of the flipped products go to a sibling class (same parent path, another leaf: the mistakes
people make), half to any other class (slips). Only classes the audit checks (at least `folds`
products) give or take flipped products, so every flip stays in the audit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from prodcat.catalogue import Product
from prodcat.taxonomy.tree import format_path, parse_path


def plant_noise(
    products: Sequence[Product], rate: float, *, min_class_count: int = 5, seed: int = 0
) -> tuple[list[Product], dict[str, tuple[str, str]]]:
    """A copy of `products` with round(rate x eligible) labels flipped; and the flipped ids ->
    (true class, planted class)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"noise rate {rate}: expected a share between 0 and 1, e.g. 0.02")
    labels = [format_path(p.label) if p.label else "" for p in products]
    counts = Counter(c for c in labels if c)
    classes = sorted(c for c, n in counts.items() if n >= min_class_count)
    known = set(classes)
    eligible = [i for i, c in enumerate(labels) if c in known]
    if len(classes) < 2:
        raise ValueError("planting noise needs at least 2 classes with enough products")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=round(rate * len(eligible)), replace=False)
    out = list(products)
    flipped: dict[str, tuple[str, str]] = {}
    for k, i in enumerate(chosen):
        true = labels[i]
        siblings = [c for c in classes if c != true and _parent(c) == _parent(true)]
        pool = siblings if k % 2 == 0 and siblings else [c for c in classes if c != true]
        planted = str(pool[int(rng.integers(len(pool)))])
        out[i] = replace(products[i], label=parse_path(planted))
        flipped[products[i].id] = (true, planted)
    return out, flipped


def _parent(path: str) -> tuple[str, ...]:
    return parse_path(path)[:-1]
