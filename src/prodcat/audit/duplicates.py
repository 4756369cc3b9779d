"""Duplicates that disagree: products that are the same thing but carry different categories.

Two kinds: byte-identical photos (the catalogue's SHA-256 of each photo file), and nearly identical
products, whose photo embeddings and title embeddings (the audit's cached features) are both within
a cosine distance of each other. Either way, at least one of the two labels is wrong, or the
taxonomy cannot tell the two categories apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prodcat.catalogue import Product
from prodcat.progress import progress_bar

# Both the photos' and the titles' cosine similarity must reach this: same shot, same wording up to
# a colour or a size. Looser pairs are merely similar products, which may well differ.
DEFAULT_NEAR_SIMILARITY = 0.97
# Rows of the similarity matrix computed at once (BLOCK x n float32: ~20 MB at n = 40,000).
BLOCK = 128
# Candidates are found on orthonormal projections of the photo and title embeddings onto this many
# principal directions each: a projection never lengthens a distance, so no true pair is missed;
# candidates are then checked on the full vectors.
PROJECTION_DIMS = 96


@dataclass(frozen=True)
class DisagreeingDuplicate:
    """Two or more products that are the same, with their different categories."""

    kind: str  # "identical photo" or "near-identical photo + title"
    ids: tuple[str, ...]
    categories: tuple[str, ...]  # one per id
    similarity: float  # 1.0 for identical photos; else the lower of the two cosines

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "ids": list(self.ids),
            "categories": list(self.categories),
            "similarity": round(self.similarity, 4),
        }


def identical_photos(
    products: Sequence[Product], labels: Sequence[str]
) -> list[DisagreeingDuplicate]:
    """Groups of products whose photo files are byte-identical and whose labels differ."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, product in enumerate(products):
        if product.image_sha256:
            groups[product.image_sha256].append(i)
    found = []
    for rows in groups.values():
        if len({labels[i] for i in rows}) > 1:
            found.append(
                DisagreeingDuplicate(
                    "identical photo",
                    tuple(products[i].id for i in rows),
                    tuple(labels[i] for i in rows),
                    1.0,
                )
            )
    return sorted(found, key=lambda d: d.ids)


def near_identical(
    products: Sequence[Product],
    labels: Sequence[str],
    image: np.ndarray,
    text: np.ndarray,
    *,
    threshold: float = DEFAULT_NEAR_SIMILARITY,
    photo_axes: np.ndarray | None = None,
    text_axes: np.ndarray | None = None,
    progress: bool = False,
) -> list[DisagreeingDuplicate]:
    """Pairs with different labels whose photo and title embeddings (rows L2-normalised; zero
    rows for a missing modality, which never match) both reach cosine `threshold`. Pairs of
    byte-identical photos are left to `identical_photos`. `photo_axes` / `text_axes`: orthonormal
    columns (principal directions) to find candidates on; None: a projection of the first
    `PROJECTION_DIMS` coordinates."""
    y = np.asarray(labels)
    both = np.flatnonzero((np.abs(image).sum(axis=1) > 0) & (np.abs(text).sum(axis=1) > 0))
    axes = [_axes(photo_axes, image.shape[1]), _axes(text_axes, text.shape[1])]
    found = []
    for a, b in _candidate_pairs([image[both], text[both]], axes, threshold, progress):
        i, j = int(both[a]), int(both[b])
        if y[i] == y[j] or _same_photo(products[i], products[j]):
            continue
        similarity = min(float(image[i] @ image[j]), float(text[i] @ text[j]))
        if similarity >= threshold:
            found.append(
                DisagreeingDuplicate(
                    "near-identical photo + title",
                    (products[i].id, products[j].id),
                    (labels[i], labels[j]),
                    similarity,
                )
            )
    return sorted(found, key=lambda d: (-d.similarity, d.ids))


def _axes(given: np.ndarray | None, dim: int) -> np.ndarray:
    if given is not None:
        return given[:, :PROJECTION_DIMS]
    return np.eye(dim, min(dim, PROJECTION_DIMS), dtype=np.float32)


def _same_photo(a: Product, b: Product) -> bool:
    return bool(a.image_sha256) and a.image_sha256 == b.image_sha256


def _candidate_pairs(
    parts: Sequence[np.ndarray],
    axes: Sequence[np.ndarray],
    threshold: float,
    progress: bool = False,
) -> list[tuple[int, int]]:
    """(i, j), i < j, that may have every part's cosine >= `threshold`.

    Unit vectors with cosine >= t lie within distance d = sqrt(2 - 2t), and an orthonormal
    projection never lengthens a distance: so every true pair is within d on each projected part.
    The test misses nothing and is cheap; what else passes it the caller checks on the full
    vectors. Blocks keep memory at BLOCK x n per part.
    """
    n = parts[0].shape[0]
    limit = 2.0 - 2.0 * threshold + 1e-4  # squared distance; the epsilon absorbs float32 rounding
    reduced = [part @ axis for part, axis in zip(parts, axes, strict=True)]
    norms = [(r**2).sum(axis=1) for r in reduced]
    pairs: list[tuple[int, int]] = []
    first, rest = reduced[0], list(zip(reduced[1:], norms[1:], strict=True))
    with progress_bar("audit: near-duplicates", total=n, enabled=progress) as advance:
        for start in range(0, n, BLOCK):
            pairs += _block_pairs(first, norms[0], rest, start, limit)
            advance(min(BLOCK, n - start))
    return pairs


def _block_pairs(
    first: np.ndarray,
    first_norm: np.ndarray,
    rest: list[tuple[np.ndarray, np.ndarray]],
    start: int,
    limit: float,
) -> list[tuple[int, int]]:
    """The candidate pairs (i, j > i) of rows start .. start + BLOCK."""
    block = first[start : start + BLOCK]
    # |a - b|^2 <= limit  <=>  a.b >= (|a|^2 + |b|^2 - limit) / 2: one pass over the block.
    bound = (first_norm[start : start + BLOCK, None] + first_norm[None, :] - limit) / 2.0
    rows, cols = np.nonzero(block @ first.T >= bound)
    rows = rows + start
    keep = cols > rows
    rows, cols = rows[keep], cols[keep]
    for r, norm in rest:  # the other parts only for the first part's candidates
        close = norm[rows] + norm[cols] - 2.0 * np.einsum("ij,ij->i", r[rows], r[cols]) <= limit
        rows, cols = rows[close], cols[close]
    return list(zip(rows.tolist(), cols.tolist(), strict=True))
