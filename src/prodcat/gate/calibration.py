"""Calibrated confidence and the accept threshold: temperature scaling, ECE, threshold choice.

Pure numpy/scipy functions on logits, labels and confidences, so that they can be tested on
synthetic scores with a known answer; `prodcat.gate.gate` applies them per modality case.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

# scipy.optimize and scipy.stats are imported in the functions that fit or certify (training, the
# desk's retune): together ~0.5 s of a server's start, and prediction needs neither.
# Temperatures outside this range mean a broken fit (or a degenerate validation part), not a
# model that needs them: log T is searched in [-LOG_T_BOUND, LOG_T_BOUND].
LOG_T_BOUND = math.log(50.0)
ECE_BINS = 15
# A threshold no probability reaches: "accept nothing" when the target cannot be met.
ACCEPT_NOTHING = math.nextafter(1.0, 2.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes `y` (column indices)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the NLL of `y` (bounded 1-d search on log T); 1.0 if no data.

    Dividing logits by one scalar never changes the argmax, so accuracy is untouched; only the
    confidence is rescaled to match how often the model is right.
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(logits, y, math.exp(log_t)),
        bounds=(-LOG_T_BOUND, LOG_T_BOUND),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float | None:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(confidence) == 0:
        return None
    bins = _bin_index(confidence, n_bins)
    total = 0.0
    for b in range(n_bins):
        rows = bins == b
        if rows.any():
            total += rows.sum() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total / len(confidence))


def reliability(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> list[dict[str, float | int]]:
    """Per non-empty bin: range, mean confidence, accuracy, count (the reliability diagram)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    bins = _bin_index(confidence, n_bins)
    out: list[dict[str, float | int]] = []
    for b in range(n_bins):
        rows = bins == b
        if rows.any():
            out.append(
                {
                    "low": b / n_bins,
                    "high": (b + 1) / n_bins,
                    "confidence": float(confidence[rows].mean()),
                    "accuracy": float(correct[rows].mean()),
                    "count": int(rows.sum()),
                }
            )
    return out


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)


DEFAULT_DELTA = 0.05


def clopper_pearson_upper(errors: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """One-sided (1 - delta) exact binomial upper bounds on an error rate seen as errors / n.

    The bound is the beta quantile ``Beta(1 - delta; errors + 1, n - errors)`` (1 when every
    product is wrong or there are none).
    """
    from scipy.stats import beta

    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = np.ones(np.broadcast(errors, n).shape, dtype=np.float64)
    ok = (errors < n) & (n > 0)
    errors, n = np.broadcast_to(errors, out.shape), np.broadcast_to(n, out.shape)
    out[ok] = beta.ppf(1.0 - delta, errors[ok] + 1.0, n[ok] - errors[ok])
    return out


def min_accepted(target: float, delta: float = DEFAULT_DELTA) -> int:
    """The fewest accepted products that can certify `target` at all (every one of them right).

    With k products and no error, the exact upper bound on the error is 1 - delta^(1/k); it reaches
    1 - target only from k = ln(delta) / ln(target) on: 598 at 99.5%, 59 at 95% (delta 0.05).
    """
    if target >= 1.0:
        return 2**62  # an error rate of exactly 0 is never certified by a finite sample
    return max(1, math.ceil(math.log(delta) / math.log(target) - 1e-9))


@lru_cache(maxsize=64)
def first_candidate(target: float, delta: float = DEFAULT_DELTA, n: int | None = None) -> int:
    """How many of the most confident products the first tested threshold accepts.

    Not the fewest that could certify `target` (`min_accepted`, 598 at 99.5%): one confident
    error there (label noise sits among the most confident products of real catalogues) would
    stop the fixed sequence at once; on FULL it stopped at 1,117 products, 6.6% coverage. The
    start is the smallest set that certifies the target with half its error rate (2,100 at 99.5%),
    but no more than half the calibration products, and never fewer than `min_accepted`. It
    depends on the target, delta and the number of products, never on their labels, so the
    sequence stays fixed in advance.
    """
    least = min_accepted(target, delta)
    if target >= 1.0:
        return least
    allowed = 1.0 - target
    low, high = least, least
    while clopper_pearson_upper(np.array(high * allowed // 2), np.array(high), delta) > allowed:
        low, high = high, high * 2
    while low < high:  # the smallest k that passes, by bisection
        middle = (low + high) // 2
        if (
            clopper_pearson_upper(np.array(middle * allowed // 2), np.array(middle), delta)
            > allowed
        ):
            low = middle + 1
        else:
            high = middle
    return max(least, high if n is None else min(high, n // 2))


@dataclass(frozen=True)
class ThresholdChoice:
    """An accept threshold with the evidence it rests on (`certify_threshold`)."""

    threshold: float
    n_calibration: int  # calibration products the choice looked at
    n_accepted: int  # of those, accepted at the threshold
    errors: int  # of those, wrong
    # The one-sided (1 - delta) Clopper-Pearson lower bound on the accepted accuracy (None:
    # nothing accepted).
    guaranteed_accuracy: float | None
    delta: float

    @property
    def accepted_accuracy(self) -> float | None:
        return 1.0 - self.errors / self.n_accepted if self.n_accepted else None

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "accepted_accuracy": self.accepted_accuracy}


def certify_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float, delta: float = DEFAULT_DELTA
) -> ThresholdChoice:
    """The accept threshold with a finite-sample guarantee (Learn-then-Test, fixed sequence).

    The candidates are the calibration confidences from the most to the least confident (a
    threshold accepts every product at or above it, so only the ends of runs of equal confidence
    are cuts), starting at the set of the `first_candidate` most confident products. Each candidate
    tests "the accepted error rate exceeds 1 - target" with a one-sided Clopper-Pearson bound at
    level `delta`; testing stops at the first candidate that cannot reject it, and the answer is the
    last one that did. Because the order is fixed before the labels are looked at, no correction for
    testing many thresholds is needed: the accepted error rate is at most 1 - target with
    probability >= 1 - delta (tests/test_calibration.py checks this on simulated draws).
    `ACCEPT_NOTHING` when even the first candidate fails (a small calibration set, or a model that
    never reaches the target).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target accuracy {target}; expected a number in (0, 1]")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta {delta}; expected a number in (0, 1), e.g. 0.05")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order]
    counts = np.arange(1, n + 1)
    errors = counts - np.cumsum(ok)
    cut = np.append(conf[1:] != conf[:-1], True) if n else np.zeros(0, dtype=bool)
    candidates = np.flatnonzero(cut & (counts >= first_candidate(target, delta, n)))
    upper = clopper_pearson_upper(errors[candidates], counts[candidates], delta)
    failed = np.flatnonzero(upper > 1.0 - target)
    last = (failed[0] if len(failed) else len(candidates)) - 1
    if last < 0:
        return ThresholdChoice(ACCEPT_NOTHING, n, 0, 0, None, delta)
    i = candidates[last]
    return ThresholdChoice(
        float(conf[i]), n, int(counts[i]), int(errors[i]), float(1.0 - upper[last]), delta
    )


def choose_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float, delta: float = DEFAULT_DELTA
) -> float:
    """`certify_threshold`'s threshold alone."""
    return certify_threshold(confidence, correct, target, delta).threshold


def accuracy_lower_bound(correct: int, n: int, delta: float = DEFAULT_DELTA) -> float | None:
    """The one-sided (1 - delta) Clopper-Pearson lower bound on an accuracy of correct / n."""
    if n == 0:
        return None
    return float(1.0 - clopper_pearson_upper(np.array(n - correct), np.array(n), delta))


def coverage_curve(
    confidence: np.ndarray, correct: np.ndarray, n_points: int = 50
) -> list[dict[str, float]]:
    """Accuracy of the accepted products against the share accepted, at `n_points` thresholds."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(confidence) == 0:
        return []
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order]
    accuracy = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    ks = np.unique(np.linspace(1, len(ok), n_points).round().astype(int))
    return [
        {
            "coverage": float(k / len(ok)),
            "accuracy": float(accuracy[k - 1]),
            "threshold": float(conf[k - 1]),
        }
        for k in ks
    ]


def calibration_summary(
    proba_before: np.ndarray, proba_after: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """ECE before / after and both reliability diagrams, for the products with a class (y >= 0)."""
    rows = np.asarray(y) >= 0
    y_in = np.asarray(y)[rows]
    out: dict[str, Any] = {}
    for name, proba in (("uncalibrated", proba_before), ("calibrated", proba_after)):
        p = np.asarray(proba)[rows]
        conf = p.max(axis=1) if len(p) else np.zeros(0)
        correct = p.argmax(axis=1) == y_in if len(p) else np.zeros(0, bool)
        out[name] = {
            "ece": expected_calibration_error(conf, correct),
            "reliability": reliability(conf, correct),
        }
    return out


def unsupported_classes(
    predicted: np.ndarray,
    correct: np.ndarray,
    accepted: np.ndarray,
    n_classes: int,
    target: float,
    delta: float = DEFAULT_DELTA,
) -> list[int]:
    """The classes whose own accepted calibration products cannot support `target`.

    Per predicted class, over the calibration products accepted at the chosen thresholds: none at
    all (no evidence), or more errors than `target` allows, judged by a one-sided exact binomial
    test at level `delta` (P(X >= errors | n accepted, error rate 1 - target) < delta). A class
    with a handful of accepted products and no error is kept: it does not contradict the target,
    and the threshold's own guarantee covers it with the rest.
    """
    from scipy.stats import binom

    predicted = np.asarray(predicted)
    correct, accepted = np.asarray(correct, dtype=bool), np.asarray(accepted, dtype=bool)
    out = []
    for c in range(n_classes):
        rows = accepted & (predicted == c)
        n, errors = int(rows.sum()), int(np.sum(rows & ~correct))
        if n == 0 or (errors > 0 and binom.sf(errors - 1, n, 1.0 - target) < delta):
            out.append(c)
    return out
