"""Out-of-fold probabilities for every audited product, from the cached photo and title features.

The audit's head must be fast (5 fits over 40,000 products in well under the 3 minutes the whole
audit may take on 2 cores) and must give probabilities good enough for confident learning. It is a
linear discriminant analysis (scikit-learn's, shrinkage covariance: closed form, no iterations) on
the photo embedding reduced to its principal directions next to the title embedding, every column
standardised. On the benchmark catalogue its 5 folds take 16-20 s on a loaded machine and reach
95.4% out-of-fold accuracy, where the product's fusion-blend head costs 285 s to cross-fit
(docs/audit.md). The folds are the near-duplicate groups of
`prodcat.training.crossfit.fold_of`, so copies of one photo never sit on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from prodcat.catalogue import Product
from prodcat.encoders.base import unit_rows
from prodcat.encoders.registry import get_encoder
from prodcat.features.cache import FeatureCache
from prodcat.features.encode import encode_products
from prodcat.progress import progress_bar
from prodcat.training.crossfit import fold_of

DEFAULT_IMAGE_ENCODER = "effnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm"
# Principal directions kept of the photo embedding (1,280 for Lite0): the discriminant's
# covariance costs dims^2 per product, and 256 keep what tells the classes apart.
PHOTO_DIMS = 256
# The products sampled to find them (a covariance of 3,000 x 1,280 takes a second).
PCA_SAMPLE = 3000
# Shrinkage of the shared covariance towards a scaled identity (30,000 products in 642 dimensions
# need little). 0.1 is the one setting measured (docs/audit.md), not a tuned value.
SHRINKAGE = 0.1
# Probability given to a class a fold's head never saw (all its products sit in the held-out
# fold): tiny, so it is never suggested, and the row is renormalised.
UNSEEN_PROBABILITY = 1e-9


@dataclass(frozen=True)
class AuditFeatures:
    """Row-aligned with the products: L2-normalised embeddings (zero rows where missing)."""

    image: np.ndarray
    text: np.ndarray
    has_image: np.ndarray
    has_text: np.ndarray
    errors: dict[str, str]  # product id -> why a modality is missing


def load_features(
    products: Sequence[Product],
    cache: FeatureCache,
    *,
    image_encoder: str = DEFAULT_IMAGE_ENCODER,
    text_encoder: str = DEFAULT_TEXT_ENCODER,
    progress: bool = True,
) -> AuditFeatures:
    """The products' photo and title embeddings through the feature cache (encoded if missing)."""
    ids = [p.id for p in products]
    found = []
    errors: dict[str, str] = {}
    for name in (image_encoder, text_encoder):
        features = encode_products(products, get_encoder(name), cache, progress=progress)
        mask, rows = features.lookup(ids)
        matrix = np.zeros((len(ids), features.vectors.shape[1]), dtype=np.float32)
        matrix[mask] = unit_rows(rows)
        found.append((matrix, mask))
        errors.update(features.errors)
    (image, has_image), (text, has_text) = found
    return AuditFeatures(image, text, has_image, has_text, errors)


def principal_axes(matrix: np.ndarray, rows: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """(d, dims) orthonormal top principal directions of `matrix[rows]`, from a sample of
    `PCA_SAMPLE` of them (an eigendecomposition of their covariance: a second or two)."""
    rng = np.random.default_rng(seed)
    sample = matrix[rng.choice(rows, size=min(len(rows), PCA_SAMPLE), replace=False)]
    _, vectors = np.linalg.eigh(np.cov((sample - sample.mean(axis=0)).T))
    return np.ascontiguousarray(vectors[:, ::-1][:, : min(dims, matrix.shape[1])], np.float32)


def design_matrix(features: AuditFeatures, photo_axes: np.ndarray | None) -> np.ndarray:
    """The head's input: the photo embedding on `photo_axes` (its principal directions; None
    keeps it whole), the title embedding, and a column per modality saying it is missing;
    standardised (no labels used, so fitting it on every product leaks nothing into the
    folds)."""
    image = features.image if photo_axes is None else features.image @ photo_axes
    missing = np.stack([~features.has_image, ~features.has_text], axis=1)
    joined = np.hstack([image, features.text, missing]).astype(np.float64)
    spread = joined.std(axis=0)
    keep = spread > 1e-9  # constant columns (a modality nobody lacks) tell nothing
    return ((joined[:, keep] - joined[:, keep].mean(axis=0)) / spread[keep]).astype(np.float32)


def photo_axes_of(features: AuditFeatures, seed: int = 0) -> np.ndarray | None:
    """The photo embedding's top `PHOTO_DIMS` principal directions (None: too few photos or an
    embedding already that small, kept whole)."""
    present = np.flatnonzero(features.has_image)
    if features.image.shape[1] <= PHOTO_DIMS or len(present) <= PHOTO_DIMS:
        return None
    return principal_axes(features.image, present, PHOTO_DIMS, seed)


def folds_of(products: Sequence[Product], folds: int, seed: int = 0) -> np.ndarray:
    """Each product's fold (its near-duplicate group's, so copies stay together)."""
    return fold_of(products, folds, seed)


def out_of_fold_proba(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    fold: np.ndarray,
    *,
    shrinkage: float = SHRINKAGE,
    progress: bool = True,
) -> np.ndarray:
    """(n, n_classes) probabilities, each row from a head fitted on the other folds."""
    proba = np.full((len(y), n_classes), UNSEEN_PROBABILITY)
    folds = np.unique(fold)
    with progress_bar("audit: fitting fold heads", total=len(folds), enabled=progress) as advance:
        for f in folds:
            held = fold == f
            head = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)
            head.fit(x[~held], y[~held])
            proba[np.ix_(held, head.classes_)] = head.predict_proba(x[held])
            advance(1)
    proba /= proba.sum(axis=1, keepdims=True)
    return proba
