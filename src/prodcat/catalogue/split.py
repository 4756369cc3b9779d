"""Deterministic train / validation / test splits that keep near-duplicates together.

Catalogues hold the same photo under several ids (colour variants, re-listings). A random row split
puts copies on both sides and inflates test accuracy, so products are grouped first (by photo
content, optionally also by title) and whole groups are assigned. A group's part is a pure function
of its key, so the split is stable under row order and new rows never move existing products.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Sequence
from typing import Literal

from prodcat.catalogue import Product

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

GroupBy = Literal["image", "image+title"]


def normalise_title(text: str) -> str:
    """A title without case, spacing or punctuation: ``"Puma  Shoe!"`` -> ``"puma shoe"``."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def _image_key(product: Product) -> str:
    """The key of a product alone: its photo's hash, else its title, else its id."""
    if product.image_sha256:
        return f"image:{product.image_sha256}"
    title = normalise_title(product.text)
    return f"title:{title}" if title else f"id:{product.id}"


def group_keys(products: Sequence[Product], by: GroupBy = "image") -> list[str]:
    """One group key per product; products that must land in the same part share a key.

    ``"image"``: byte-identical photos share a group (products without a photo are grouped by
    normalised title). ``"image+title"``: also join products with the same normalised title,
    transitively; a group's key is its smallest member key, so it does not depend on row order.
    """
    own = [_image_key(p) for p in products]
    if by == "image":
        return own
    if by != "image+title":
        raise ValueError(f"by must be 'image' or 'image+title', got {by!r}")
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]  # path halving keeps the trees flat
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:  # the smaller key becomes the root, so roots are component minima
            parent[max(root_a, root_b)] = min(root_a, root_b)

    for key, product in zip(own, products, strict=True):
        find(key)
        title = normalise_title(product.text)
        if title:
            union(key, f"title:{title}")
    return [find(key) for key in own]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    if len(fractions) != len(SPLIT_NAMES):
        raise ValueError(
            f"fractions must give one share per part {SPLIT_NAMES}, got {tuple(fractions)}"
        )
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be finite and non-negative, got {tuple(fractions)}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {tuple(fractions)} (sum {sum(fractions)})")
    return tuple(fractions)


def assign_split(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The part of a group: sha256 of its key, read as a uniform number in [0, 1), cut by fractions.

    Stable across runs, machines and Python versions (unlike `hash`), and independent of any other
    row.
    """
    shares = _check_fractions(fractions)
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in zip(SPLIT_NAMES, shares, strict=True):
        edge += share
        if u < edge:
            return name
    # Rounding can leave the last edge a hair under 1: give the rest to the last non-empty part.
    return next(n for n, s in zip(reversed(SPLIT_NAMES), reversed(shares), strict=True) if s > 0)


def split_catalogue(
    products: Sequence[Product],
    by: GroupBy = "image",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[str, list[Product]]:
    """Split products into ``train`` / ``validation`` / ``test``, groups kept whole, order kept."""
    _check_fractions(fractions)
    parts: dict[str, list[Product]] = {name: [] for name in SPLIT_NAMES}
    for product, key in zip(products, group_keys(products, by), strict=True):
        parts[assign_split(key, fractions)].append(product)
    return parts
