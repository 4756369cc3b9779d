"""Which classes a training learns: the class-size floor (or the N largest) on the train part.

One rule for `prodcat check`, which says before any training what a default training would learn
and leave out, and for `prodcat train`, which applies it (`prodcat.training.train.select_classes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from prodcat.catalogue.products import Product
from prodcat.catalogue.split import split_catalogue
from prodcat.taxonomy.tree import format_path

# Classes with fewer training products than this are left out unless the user says otherwise:
# one or two examples teach a head nothing it can be trusted with, and they stay measurable as
# out-of-class products.
DEFAULT_MIN_CLASS_COUNT = 5


@dataclass(frozen=True)
class ClassChoice:
    """The classes learned, and every other class of the catalogue with its training count."""

    learned: tuple[str, ...]  # sorted
    # Class -> products in the train part: below the floor, outside the top N, or 0 when all its
    # products fell into the validation / test parts (the split keeps photo groups together).
    left_out: dict[str, int]
    train_counts: dict[str, int]
    rule: str  # which classes: "at least 5 training products", "the 10 most training products"


def choose_classes(
    train: Sequence[Product],
    others: Sequence[Product] = (),
    *,
    top_classes: int | None = None,
    min_class_count: int | None = None,
) -> ClassChoice:
    """Choose from the train part's counts; classes seen only in `others` are left out with 0."""
    counts = Counter(format_path(p.label) for p in train if p.label)
    if top_classes is not None:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = {c for c, _ in ranked[:top_classes]}
        rule = f"the {top_classes:,} most training products"
    else:
        floor = min_class_count or DEFAULT_MIN_CLASS_COUNT
        kept = {c for c, n in counts.items() if n >= floor}
        rule = f"at least {floor:,} training products"
    every = set(counts) | {format_path(p.label) for p in others if p.label}
    left_out = {c: counts.get(c, 0) for c in sorted(every) if c not in kept}
    return ClassChoice(tuple(sorted(kept)), left_out, dict(counts), rule)


def default_training_classes(products: Sequence[Product]) -> ClassChoice:
    """What `prodcat train` with default options would learn from these products."""
    parts = split_catalogue([p for p in products if p.label])
    return choose_classes(parts["train"], parts["validation"] + parts["test"])
