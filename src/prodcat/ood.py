"""Out-of-distribution score: does a product look like any class the model was trained on?

Signals, each computed only where its input exists (so a product with only a photo, or only a
title, is still scored from what it has):

- ``image_distance``: class-conditional Mahalanobis distance of the photo's frozen embedding to
  the nearest training class mean, with one shared within-class covariance, in a PCA subspace of
  the training embeddings (plus the squared residual off that subspace, scaled by its mean), so
  the stored state is a projection, the class means and a few scalars, not the training vectors.
- ``text_distance``: the same in the title embedding space.
- ``unseen_words``: the share of the title's words never seen in a training title; the
  prototype's rule ("all-zero bag of words") is this signal equal to 1.
- ``energy``: minus the log-sum-exp of the head's logits (low total evidence for every class).

Each signal is put on a common scale by the validation in-class products: 0 at their median, 1 at
their 95th percentile; the combined score is the sum of a product's available signals. On T10's
out-of-class test products the sum beat the maximum and every signal alone (energy alone: AUROC
0.959, the sum: 0.970; `benchmarks/gate.py`), because the signals err on different products.
A head that is fed trunk activations rather than pooled photo features (`FineTuneHead` with
`Inputs.image_activations` only) has no ``image_distance``: it is scored from the other signals.
"""

# ruff: noqa: N803, N806  (scikit-learn's names: X for inputs)

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

# The prototype's tokenisation (scikit-learn's default token pattern, lowercased).
TOKEN = re.compile(r"(?u)\b\w\w+\b")
N_COMPONENTS = 128
MAX_FIT_ROWS = 20_000
RIDGE = 1e-3
FEW_ROWS = 64
SIGNALS = ("image_distance", "text_distance", "unseen_words", "energy")


def words(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def unseen_share(texts: Sequence[str], vocabulary: set[str]) -> np.ndarray:
    """Per title, the share of its words absent from `vocabulary`; NaN for a title with none."""
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        tokens = words(text)
        if tokens:
            out[i] = sum(t not in vocabulary for t in tokens) / len(tokens)
    return out


def prototype_rule(texts: Sequence[str], vocabulary: set[str]) -> np.ndarray:
    """The prototype's out-of-class flag: 1.0 when no word of the title was seen in training."""
    share = unseen_share(texts, vocabulary)
    return np.where(np.isnan(share), 1.0, (share >= 1.0).astype(np.float64))


@dataclass
class FeatureDistance:
    """Class-conditional Mahalanobis distance (shared covariance) in a PCA subspace."""

    mean: np.ndarray  # (d,)
    projection: np.ndarray  # (d, k): PCA components then whitening by the within-class covariance
    components: np.ndarray  # (d, k): the PCA basis alone, for the residual off the subspace
    class_means: np.ndarray  # (n_classes, k) in the whitened space
    residual_scale: float

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, *, n_components: int = N_COMPONENTS, seed: int = 0
    ) -> FeatureDistance:
        """Fit on training rows X with class indices y (rows of other classes must be dropped)."""
        X = np.asarray(X, dtype=np.float64)
        if len(X) > MAX_FIT_ROWS:  # a random subset estimates the covariance just as well
            keep = np.random.default_rng(seed).choice(len(X), MAX_FIT_ROWS, replace=False)
            X, y = X[keep], np.asarray(y)[keep]
        mean = X.mean(axis=0)
        centred = X - mean
        k = int(min(n_components, X.shape[1], max(1, len(X) - 1)))
        components = _principal_axes(centred, k, seed)
        z = centred @ components
        labels = np.unique(y)
        means = np.stack([z[y == c].mean(axis=0) for c in labels])
        within = z - means[np.searchsorted(labels, y)]
        cov = within.T @ within / max(1, len(z) - len(labels))
        cov += RIDGE * np.trace(cov) / k * np.eye(k)
        evals, evecs = np.linalg.eigh(cov)
        whiten = evecs / np.sqrt(evals)
        residual = centred - z @ components.T
        residual_scale = float(np.mean(np.sum(residual**2, axis=1)) / max(1, X.shape[1] - k))
        n_classes = int(labels.max()) + 1
        class_means = np.full((n_classes, k), np.inf)
        class_means[labels] = means @ whiten
        return cls(
            mean=mean.astype(np.float32),
            projection=np.ascontiguousarray(components @ whiten, dtype=np.float32),
            components=np.ascontiguousarray(components, dtype=np.float32),
            class_means=class_means.astype(np.float32),
            residual_scale=max(residual_scale, 1e-12),
        )

    def score(self, X: np.ndarray) -> np.ndarray:
        """Per row: min over classes of the squared Mahalanobis distance, plus the residual term,
        both divided by their degrees of freedom so that neither dominates by dimension."""
        centred = np.asarray(X, dtype=np.float32) - self.mean
        z = centred @ self.projection
        finite = np.isfinite(self.class_means[:, 0])
        means = self.class_means[finite]
        d2 = np.sum(z**2, axis=1)[:, None] - 2.0 * z @ means.T + np.sum(means**2, axis=1)[None, :]
        k = self.projection.shape[1]
        # The squared residual off the (orthonormal) PCA basis, without rebuilding the vector.
        in_plane = centred @ self.components
        residual = np.sum(centred**2, axis=1) - np.sum(in_plane**2, axis=1)
        d_res = np.maximum(residual, 0.0) / self.residual_scale
        n_res = max(1, len(self.mean) - k)
        out: np.ndarray = np.maximum(d2.min(axis=1), 0.0) / k + d_res / n_res
        return out.astype(np.float64)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.mean": self.mean,
            f"{prefix}.projection": self.projection,
            f"{prefix}.components": self.components,
            f"{prefix}.class_means": self.class_means,
            f"{prefix}.residual_scale": np.array([self.residual_scale], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> FeatureDistance | None:
        if f"{prefix}.mean" not in arrays:
            return None
        return cls(
            mean=arrays[f"{prefix}.mean"],
            projection=arrays[f"{prefix}.projection"],
            components=arrays[f"{prefix}.components"],
            class_means=arrays[f"{prefix}.class_means"],
            residual_scale=float(arrays[f"{prefix}.residual_scale"][0]),
        )


@dataclass
class OodScorer:
    """The signals above, their validation scales, and how they combine into one score."""

    image: FeatureDistance | None
    text: FeatureDistance | None
    vocabulary: set[str]
    # signal -> (validation in-class median, 95th percentile - median)
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        *,
        image: np.ndarray | None,
        image_mask: np.ndarray,
        text: np.ndarray | None,
        text_mask: np.ndarray,
        texts: Sequence[str],
        y: np.ndarray,
        seed: int = 0,
    ) -> OodScorer:
        """Fit the distances and the vocabulary on the training part (class indices `y`)."""
        y = np.asarray(y)
        image_fit = (
            FeatureDistance.fit(image[image_mask], y[image_mask], seed=seed)
            if image is not None and image_mask.sum() > 2
            else None
        )
        text_fit = (
            FeatureDistance.fit(text[text_mask], y[text_mask], seed=seed)
            if text is not None and text_mask.sum() > 2
            else None
        )
        return cls(image_fit, text_fit, vocabulary_of(texts))

    def signals(
        self,
        *,
        image: np.ndarray | None,
        image_mask: np.ndarray,
        text: np.ndarray | None,
        text_mask: np.ndarray,
        texts: Sequence[str],
        logits: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Raw signals, NaN where a product lacks the input a signal needs."""
        if len(texts) <= FEW_ROWS:
            # BLAS threads cost far more than they save on a few rows (one 4480 x 128 product:
            # 2.4-17 ms threaded vs 0.24 ms on one thread, 2 busy cores): serving stays cheap.
            with _blas().limit(limits=1, user_api="blas"):
                return self._signals(image, image_mask, text, text_mask, texts, logits)
        return self._signals(image, image_mask, text, text_mask, texts, logits)

    def _signals(
        self,
        image: np.ndarray | None,
        image_mask: np.ndarray,
        text: np.ndarray | None,
        text_mask: np.ndarray,
        texts: Sequence[str],
        logits: np.ndarray,
    ) -> dict[str, np.ndarray]:
        n = len(texts)
        out: dict[str, np.ndarray] = {}
        for name, fitted, values, mask in (
            ("image_distance", self.image, image, image_mask),
            ("text_distance", self.text, text, text_mask),
        ):
            signal = np.full(n, np.nan)
            if fitted is not None and values is not None and mask.any():
                signal[mask] = fitted.score(values[mask])
            out[name] = signal
        unseen = unseen_share(texts, self.vocabulary)
        unseen[~np.asarray(text_mask, dtype=bool)] = np.nan
        out["unseen_words"] = unseen
        z = np.asarray(logits, dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        out["energy"] = -(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))
        return out

    def set_scales(self, signals: dict[str, np.ndarray]) -> None:
        """Scale each signal by the validation in-class products (median -> 0, q95 -> 1)."""
        self.scales = {}
        for name, values in signals.items():
            finite = values[np.isfinite(values)]
            if len(finite) == 0:
                continue
            median, q95 = np.quantile(finite, [0.5, 0.95])
            spread = float(q95 - median)
            if spread <= 0:  # e.g. unseen words: almost every in-class title has none
                spread = float(max(np.max(finite) - median, 0.0)) or 1.0
            self.scales[name] = (float(median), spread)

    def combine(self, signals: dict[str, np.ndarray]) -> np.ndarray:
        """The sum of the scaled signals a product has (NaN only if it has none)."""
        n = len(next(iter(signals.values())))
        scaled = [
            (signals[name] - median) / spread
            for name, (median, spread) in self.scales.items()
            if name in signals
        ]
        if not scaled:
            return np.full(n, np.nan)
        stack = np.vstack(scaled)
        out = np.full(n, np.nan)
        has_any = np.isfinite(stack).any(axis=0)
        out[has_any] = np.nansum(stack[:, has_any], axis=0)
        return out

    # -- persistence ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "signals": list(SIGNALS),
            "scales": {k: list(v) for k, v in self.scales.items()},
            "vocabulary": sorted(self.vocabulary),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.image is not None:
            out.update(self.image.arrays("image"))
        if self.text is not None:
            out.update(self.text.arrays("text"))
        return out

    @classmethod
    def from_saved(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> OodScorer:
        return cls(
            image=FeatureDistance.from_arrays(arrays, "image"),
            text=FeatureDistance.from_arrays(arrays, "text"),
            vocabulary=set(config["vocabulary"]),
            scales={k: (float(v[0]), float(v[1])) for k, v in config["scales"].items()},
        )


def _principal_axes(centred: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(d, k) top principal axes; randomized SVD when the full one would be slow (O(n d k))."""
    if min(centred.shape) <= 2 * k:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        from sklearn.utils.extmath import randomized_svd

        _, _, vt = randomized_svd(centred, k, n_iter=4, random_state=seed)
    axes: np.ndarray = vt[:k].T
    return axes


@functools.cache
def _blas() -> ThreadpoolController:
    """Scanning the loaded BLAS libraries costs milliseconds: do it once."""
    return ThreadpoolController()


def vocabulary_of(texts: Iterable[str]) -> set[str]:
    return {w for t in texts for w in words(t)}


def auroc(in_class: np.ndarray, out_of_class: np.ndarray) -> float | None:
    """P(out-of-class score > in-class score), ties counting half (the Mann-Whitney AUC)."""
    a = np.asarray(in_class, dtype=np.float64)
    b = np.asarray(out_of_class, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))
    u = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))


def flagged_at(
    in_class: np.ndarray, out_of_class: np.ndarray, passing: float = 0.95
) -> float | None:
    """Share of out-of-class products flagged when `passing` of in-class products pass.

    The threshold is the `passing` quantile of the in-class scores; a product is flagged when its
    score is strictly above it (so a constant score flags nothing).
    """
    a = np.asarray(in_class, dtype=np.float64)
    b = np.asarray(out_of_class, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return None
    threshold = float(np.quantile(a, passing, method="higher"))
    return float(np.mean(b > threshold))
