"""Out-of-distribution score: does a product look like any class the model was trained on?

Signals, each computed only where its input exists (so a product with only a photo, or only a
title, is still scored from what it has):

- ``image_distance``: cosine distance of the photo's frozen embedding to its 5th nearest training
  photo, in a 128-d PCA subspace (`NeighbourDistance`; the model keeps a float16 bank of at most
  20,000 projected training embeddings).
- ``text_distance``: the same in the title embedding space, to the nearest training title.
- ``unseen_words``: the share of the title's words (`prodcat.encoders.words`, the tokeniser of
  the title encoders and head) never seen in a training title; the prototype's rule ("all-zero
  bag of words") is this signal equal to 1.
- ``max_softmax``: 1 - the head's top probability (uncalibrated).

Each signal is put on a common scale by the validation in-class products: 0 at their median, 1 at
their 95th percentile; the combined score is the sum of a product's available signals, because the
signals err on different products. The signals were chosen on T10's validation part (its
out-of-class products; the thresholds themselves never see out-of-class data): with the blended
head, max-softmax alone gave AUROC 0.976 there and energy 0.948; the photo and title neighbour
distances 0.891 and 0.944 (the earlier class-mean Mahalanobis distances: 0.82 and 0.93 on the test
part); `benchmarks/gate.py` reports the combined score on the test part.
A head that is fed trunk activations rather than pooled photo features (`FineTuneHead` with
`Inputs.image_activations` only) has no ``image_distance``: it is scored from the other signals.
"""

# ruff: noqa: N803, N806  (scikit-learn's names: X for inputs)

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from prodcat.encoders.base import unit_rows
from prodcat.encoders.words import OOD_V1_PATTERN, TOKEN_PATTERN, words

N_COMPONENTS = 128
MAX_FIT_ROWS = 20_000
SCORE_CHUNK = 1024
# Which neighbour each distance uses, chosen on T10's validation part (its out-of-class products,
# AUROC, PCA-128): photo k = 5 (0.891; k = 1: 0.871), title k = 1 (0.944; k = 5: 0.921). A
# photo's nearest neighbour is often a lookalike of another kind; titles repeat within a range.
IMAGE_NEIGHBOUR = 5
TEXT_NEIGHBOUR = 1
FEW_ROWS = 64
SIGNALS = ("image_distance", "text_distance", "unseen_words", "max_softmax")


def unseen_share(
    texts: Sequence[str], vocabulary: set[str], pattern: str = TOKEN_PATTERN
) -> np.ndarray:
    """Per title, the share of its words absent from `vocabulary` (both split by `pattern`); NaN
    for a title with none."""
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        tokens = words(text, pattern)
        if tokens:
            out[i] = sum(t not in vocabulary for t in tokens) / len(tokens)
    return out


def prototype_rule(
    texts: Sequence[str], vocabulary: set[str], pattern: str = TOKEN_PATTERN
) -> np.ndarray:
    """The prototype's out-of-class flag: 1.0 when no word of the title was seen in training."""
    share = unseen_share(texts, vocabulary, pattern)
    return np.where(np.isnan(share), 1.0, (share >= 1.0).astype(np.float64))


@dataclass
class NeighbourDistance:
    """Cosine distance to the k-th nearest training product, in a PCA subspace.

    The training embeddings are centred, projected on their top principal axes and L2-normalised;
    the bank keeps them as float16 (at most `MAX_FIT_ROWS` rows: a few MB in the model). Unlike a
    distance to class means, a neighbour distance sees that a product sits between or beside the
    training products of a class rather than near its centre, which is where the near neighbours
    of the known classes (other shoes, other tops) fall.
    """

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (d, k) orthonormal PCA basis
    bank: np.ndarray  # (n, k) unit rows, float16 values held as float32 (saved as float16)
    k: int  # which neighbour: 1 = the nearest

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        *,
        k: int,
        n_components: int = N_COMPONENTS,
        seed: int = 0,
    ) -> NeighbourDistance:
        """Fit on training rows X (of the model's classes only)."""
        # float32: half the SVD's time of float64, and the same 128-d subspace (measured on FULL).
        X = np.asarray(X, dtype=np.float32)
        if len(X) > MAX_FIT_ROWS:  # a random subset: the bank's size stays bounded
            X = X[np.random.default_rng(seed).choice(len(X), MAX_FIT_ROWS, replace=False)]
        mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        dims = int(min(n_components, X.shape[1], max(1, len(X) - 1)))
        components = _principal_axes(X - mean, dims, seed).astype(np.float32)
        fitted = cls(mean, components, np.zeros((0, dims), np.float32), k)
        # Rounded to float16 now, so a loaded model scores exactly as the trained one.
        fitted.bank = fitted.unit(X).astype(np.float16).astype(np.float32)
        return fitted

    def unit(self, X: np.ndarray) -> np.ndarray:
        """Rows of X centred, projected on the principal axes and scaled to length 1."""
        return unit_rows((np.asarray(X, dtype=np.float32) - self.mean) @ self.components)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Per row: 1 - cosine similarity to the k-th nearest bank row (0 = a known product)."""
        z = self.unit(X)
        bank = self.bank
        k = min(self.k, len(bank))
        out = np.empty(len(z))
        for start in range(0, len(z), SCORE_CHUNK):  # bounds the (rows x bank) similarity block
            sims = z[start : start + SCORE_CHUNK] @ bank.T
            # The nearest alone: a max is several times cheaper than a partition.
            kth = sims.max(axis=1) if k == 1 else -np.partition(-sims, k - 1, axis=1)[:, k - 1]
            out[start : start + SCORE_CHUNK] = 1.0 - kth
        return out

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.mean": self.mean,
            f"{prefix}.components": self.components,
            f"{prefix}.bank": self.bank.astype(np.float16),
            f"{prefix}.k": np.array([self.k], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> NeighbourDistance | None:
        if f"{prefix}.projection" in arrays:
            raise ValueError(
                "this model's gate was saved by an older prodcat (class-mean distances); "
                "train the model again to get the current out-of-distribution score"
            )
        if f"{prefix}.mean" not in arrays:
            return None
        return cls(
            mean=arrays[f"{prefix}.mean"],
            components=arrays[f"{prefix}.components"],
            bank=arrays[f"{prefix}.bank"].astype(np.float32),
            k=int(arrays[f"{prefix}.k"][0]),
        )


@dataclass
class OodScorer:
    """The signals above, their validation scales, and how they combine into one score."""

    image: NeighbourDistance | None
    text: NeighbourDistance | None
    vocabulary: set[str]
    # signal -> (validation in-class median, 95th percentile - median)
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)
    # What a word is, for `vocabulary` and the titles scored against it (saved with the gate).
    token_pattern: str = TOKEN_PATTERN

    @classmethod
    def fit(
        cls,
        *,
        image: np.ndarray | None,
        image_mask: np.ndarray,
        text: np.ndarray | None,
        text_mask: np.ndarray,
        texts: Sequence[str],
        seed: int = 0,
    ) -> OodScorer:
        """Fit the distances and the vocabulary on the training products of the model's classes."""
        image_fit = (
            NeighbourDistance.fit(image[image_mask], k=IMAGE_NEIGHBOUR, seed=seed)
            if image is not None and image_mask.sum() > 2
            else None
        )
        text_fit = (
            NeighbourDistance.fit(text[text_mask], k=TEXT_NEIGHBOUR, seed=seed)
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
        # BLAS threads cost far more than they save on a few rows (one 4480 x 128 product:
        # 2.4-17 ms threaded vs 0.24 ms on one thread, 2 busy cores): serving stays cheap.
        few = len(texts) <= FEW_ROWS
        with _blas().limit(limits=1, user_api="blas") if few else contextlib.nullcontext():
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
        unseen = unseen_share(texts, self.vocabulary, self.token_pattern)
        unseen[~np.asarray(text_mask, dtype=bool)] = np.nan
        out["unseen_words"] = unseen
        z = np.asarray(logits, dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        out["max_softmax"] = 1.0 - 1.0 / np.exp(z - top).sum(axis=1)  # 1 - the top probability
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
            "token_pattern": self.token_pattern,
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
            image=NeighbourDistance.from_arrays(arrays, "image"),
            text=NeighbourDistance.from_arrays(arrays, "text"),
            vocabulary=set(config["vocabulary"]),
            scales={k: (float(v[0]), float(v[1])) for k, v in config["scales"].items()},
            # A gate saved before the one tokeniser names no pattern: it keeps the one its
            # vocabulary was built with.
            token_pattern=str(config.get("token_pattern", OOD_V1_PATTERN)),
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
    """Every word of the (training) titles."""
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
