"""Calibrated confidence and the accept threshold: temperature scaling, ECE, threshold choice.

Pure numpy/scipy functions on logits, labels and confidences, so that they can be tested on
synthetic scores with a known answer; `prodcat.gate.gate` applies them per modality case.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

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


def min_accepted(target: float) -> int:
    """The fewest accepted products at which an accuracy of `target` is measurable at all.

    Below 1 / (1 - target) products (200 at 99.5%) a single error already breaks the target, so
    prefixes shorter than that are not allowed to veto a threshold.
    """
    return max(1, math.ceil(1.0 / max(1.0 - target, 1e-9)))


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest confidence threshold whose accepted products reach `target` accuracy.

    Sort by confidence, most confident first; a threshold accepts every product at or above it,
    so the candidates are the ends of runs of equal confidence. The answer is the lowest candidate
    whose accepted set is at least `min_accepted(target)` products (200 at 99.5%: fewer cannot
    show that accuracy) and reaches the target. The accepted set is judged as a whole, so a few
    confident label-noise errors at the very top do not veto a threshold that holds over
    thousands of products. Returns `ACCEPT_NOTHING` when no such set exists (for instance a
    validation part smaller than `min_accepted`, or a model that never reaches the target).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target accuracy {target}; expected a number in (0, 1]")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order]
    accuracy = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    # Only the last product of each run of equal confidences is a possible cut.
    cut = np.append(conf[1:] != conf[:-1], True) if len(conf) else np.zeros(0, dtype=bool)
    big_enough = np.arange(1, len(conf) + 1) >= min_accepted(target)
    passing = np.flatnonzero(cut & big_enough & (accuracy >= target))
    if len(passing) == 0:
        return ACCEPT_NOTHING
    return float(conf[passing[-1]])


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
