"""Calibrating an extension against the head, on the model's stored validation sample.

Known classes of the sample play new ones (dropped from the head's output and from the anchors,
given a prototype from a few of their products, or known by their name only), and the scores'
coefficients minimise the log-loss of the merged output over every other sample product
(`prodcat.model.extension` says what the scores are; docs/extend.md why). The log-loss does not
weigh what an old product pulled into a young class costs, so the prototypes' bias is then set
at an operating point chosen on FULL's validation part (`BIAS_SHIFT`), and each real class
with examples gets its own cap: it may take at most `FLIP_BUDGET` of the sample's old products
(`cap_flips`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize

from prodcat.encoders.base import unit_rows
from prodcat.heads import Inputs
from prodcat.model.extension import (
    EVAL_ROWS_MIN,
    SIMULATED_CLASSES,
    CalibrationSample,
    ExtendError,
    Extension,
    leaf_names,
    prototype_features,
    rival_similarity,
)

ZERO_SHOT_ENCODER = "minilm"
MAX_SHOTS = 10  # the prototypes' calibration plays new classes with at most this many examples
# The columns of `prototype_features` and those the log-loss fit uses (docs/extend.md).
FEATURES = ("similarity", "margin", "confidence")
PROTOTYPE_FEATURES: tuple[str, ...] = FEATURES
# Added to the fitted bias of the prototypes' log-mass: the operating point between the new
# classes' accuracy and the old products they pull in, chosen on the validation part of FULL
# (docs/extend.md: the trade-off curve). The log-loss fit alone sits lower on that curve.
BIAS_SHIFT = 1.0
NAME_FEATURES: tuple[str, ...] = ("similarity", "confidence")
# Each class with examples may pull at most this share of the validation sample's old products
# (right before, its class after) into itself; past it, its own bias is lowered (`cap_flips`).
FLIP_BUDGET = 0.001


# -- calibration against the head -------------------------------------------------------------
def calibrate(
    ext: Extension,
    sample: CalibrationSample,
    main: np.ndarray,
    inputs: Inputs,
    log_p: np.ndarray,
    base_classes: list[str],
    seed: int,
) -> None:
    """Fit (scale, bias) of the prototypes and of the names on the validation sample: known
    classes play new ones (dropped from the head's output, given a prototype or a name)."""
    rng = np.random.default_rng(seed)
    y = sample.labels[main]
    counts = Counter(int(c) for c in ext.example_class)
    record: dict[str, Any] = {}
    if counts:
        young = [n for c, n in counts.items() if c >= ext.n_base] or list(counts.values())
        shots = int(np.clip(np.median(young), 1, MAX_SHOTS))
        embedded = ext.space.embed_inputs(inputs)
        ext.anchors, ext.anchor_class, sums = _class_means(embedded, y)
        similarity = _anchor_similarity_left_out(embedded, y, ext.anchor_class, sums)
        parts = _simulate_prototypes(log_p, y, embedded, similarity, ext.anchor_class, shots, rng)
        weights, bias = _fit_mass(*parts, active=PROTOTYPE_FEATURES)
        ext.scale, ext.margin_scale, ext.confidence_scale = weights
        ext.bias = bias + BIAS_SHIFT
        record["prototypes"] = _fit_record(weights, bias, shots, parts)
        record["prototypes"]["bias_shift"] = BIAS_SHIFT
        record["prototypes"]["capped"] = cap_flips(ext, embedded, y, log_p, similarity)
    if len(ext.name_class) and ext.text_slice is not None and inputs.text is not None:
        titles = unit_rows(inputs.text[:, slice(*ext.text_slice)])
        ext.name_anchors = encode_names(leaf_names(base_classes))
        parts = _simulate_names(log_p, y, titles @ ext.name_anchors.T)
        weights, ext.name_bias = _fit_mass(*parts, active=NAME_FEATURES)
        ext.name_scale, ext.name_margin_scale, ext.name_confidence_scale = weights
        record["names"] = _fit_record(weights, ext.name_bias, 0, parts)
    ext.info["calibration"] = record


def _class_means(embedded: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit class means, their classes, the sums) of the sample's products per class."""
    classes = np.unique(y)
    sums = np.vstack([embedded[y == c].sum(axis=0) for c in classes])
    return unit_rows(sums), classes, sums


def _anchor_similarity_left_out(
    embedded: np.ndarray, y: np.ndarray, anchor_class: np.ndarray, sums: np.ndarray
) -> np.ndarray:
    """(n, A) similarity of each sample product to each anchor, its own class's anchor made
    without it (a new product is never part of an anchor)."""
    similarity = embedded @ unit_rows(sums).T
    position = np.searchsorted(anchor_class, y)
    own = unit_rows(sums[position] - embedded)
    alone = np.linalg.norm(sums[position] - embedded, axis=1) < 1e-6
    similarity[np.arange(len(y)), position] = np.where(alone, -1.0, np.sum(embedded * own, axis=1))
    return similarity


def _simulate_prototypes(
    log_p: np.ndarray,
    y: np.ndarray,
    embedded: np.ndarray,
    anchor_similarity: np.ndarray,
    anchor_class: np.ndarray,
    shots: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known classes played as new: `shots` sample products of each make its prototype; the
    other products are scored against it with the class dropped from the head's output."""
    sizes = np.bincount(y, minlength=log_p.shape[1])
    eligible = np.flatnonzero(sizes >= shots + EVAL_ROWS_MIN)
    if not len(eligible):
        raise ExtendError(
            f"the model's calibration sample has no class with {shots + EVAL_ROWS_MIN} products "
            "or more: too small to calibrate added classes against the head"
        )
    parts = []
    for c in rng.permutation(eligible)[:SIMULATED_CLASSES]:
        shown = rng.choice(np.flatnonzero(y == c), shots, replace=False)
        keep = np.ones(len(y), dtype=bool)
        keep[shown] = False
        prototype = unit_rows(embedded[shown].mean(axis=0, keepdims=True))[0]
        similarity = embedded[keep] @ prototype
        others = anchor_similarity[keep][:, anchor_class != c]
        rival = others.max(axis=1) if others.shape[1] else np.zeros(len(similarity))
        parts.append(_dropped(log_p[keep], y[keep], int(c), similarity, rival))
    return _joined(parts)


def _simulate_names(
    log_p: np.ndarray, y: np.ndarray, similarity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every known class with products in the sample played as a category known by name only."""
    sizes = np.bincount(y, minlength=log_p.shape[1])
    # No margin here: against the other classes' names it took 9 points of the old classes'
    # accuracy on FULL (to 92% top-1 on the new ones); similarity alone: 2 points (docs/extend.md).
    parts = [
        _dropped(log_p, y, int(c), similarity[:, c], similarity[:, c])
        for c in np.flatnonzero(sizes >= EVAL_ROWS_MIN)
    ]
    return _joined(parts)


def _dropped(
    log_p: np.ndarray,
    y: np.ndarray,
    c: int,
    similarity: np.ndarray,
    rival: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`prototype_features`, log-probability of the true class once c is dropped from the
    head's output and the rest renormalised, whether the product is of c)."""
    rest = np.log(np.maximum(1.0 - np.exp(log_p[:, c]), 1e-12))
    own = log_p[np.arange(len(y)), y] - rest
    others = log_p.copy()
    others[:, c] = -np.inf
    confidence = others.max(axis=1) - rest  # the head's top class once c is gone
    features = prototype_features(similarity[:, None], rival[:, None], confidence)
    return features[:, 0, :].astype(np.float64), own, y == c


def _joined(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, own, new = zip(*parts, strict=True)
    return np.concatenate(s), np.concatenate(own), np.concatenate(new)


def _fit_mass(
    features: np.ndarray, own: np.ndarray, new: np.ndarray, *, active: Sequence[str]
) -> tuple[np.ndarray, float]:
    """(coefficients in `FEATURES` order, bias) minimising the log-loss of
    softmax([head's log-probs, mass]) with mass = features . coefficients + bias; the features
    not `active` keep a coefficient of 0."""
    columns = [FEATURES.index(name) for name in active]
    design = np.hstack([features[:, columns], np.ones((len(features), 1))])

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        mass = design @ params
        value = np.mean(np.logaddexp(0.0, mass) - np.where(new, mass, own))
        slope = 0.5 * (1.0 + np.tanh(0.5 * mass)) - new  # d loss / d mass per product
        return float(value), design.T @ slope / len(slope)

    start = np.zeros(len(columns) + 1)
    start[0], start[-1] = 10.0, -5.0
    fitted = minimize(loss, x0=start, jac=True, method="L-BFGS-B")
    weights = np.zeros(len(FEATURES))
    weights[columns] = fitted.x[:-1]
    return weights, float(fitted.x[-1])


def cap_flips(
    ext: Extension,
    embedded: np.ndarray,
    y: np.ndarray,
    log_p: np.ndarray,
    anchor_similarity: np.ndarray,
) -> dict[str, float]:
    """Set `ext.class_bias`: per class with examples, the largest offset <= 0 that keeps the
    sample's old products it takes (the head right, the class on top after the merge) within
    `FLIP_BUDGET` of the sample (each anchor made without the product scored, as a new product
    is in none). Returns the offsets of the classes capped, by class index."""
    prototypes, owners = ext.prototypes()
    rival = rival_similarity(anchor_similarity, ext.anchor_class, owners)
    features = prototype_features(embedded @ prototypes.T, rival, log_p.max(axis=1))
    mass = features @ ext.weights() + ext.bias
    right = log_p.argmax(axis=1) == y
    allowed = FLIP_BUDGET * len(y)
    ext.class_bias = np.zeros(ext.n_base + len(ext.classes))
    capped: dict[str, float] = {}
    for j, c in enumerate(owners):
        rows = right & (y != c)
        head = log_p[rows, c] if c < ext.n_base else np.full(int(rows.sum()), -np.inf)
        ext.class_bias[c] = _largest_offset(head, mass[rows, j], log_p[rows, y[rows]], allowed)
        if ext.class_bias[c] < 0:
            capped[str(int(c))] = round(float(ext.class_bias[c]), 3)
    return capped


def _largest_offset(head: np.ndarray, mass: np.ndarray, own: np.ndarray, allowed: float) -> float:
    """The largest offset <= 0 with at most `allowed` products whose merged score for the class,
    log(p_head + exp(mass + offset)), passes their own class's (bisection: monotone)."""

    def taken(offset: float) -> int:
        return int(np.sum(np.logaddexp(head, mass + offset) > own))

    if taken(0.0) <= allowed:
        return 0.0
    low, high = -40.0, 0.0
    for _ in range(30):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if taken(middle) <= allowed else (low, middle)
    return low


def _fit_record(
    weights: np.ndarray,
    bias: float,
    shots: int,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, Any]:
    record: dict[str, Any] = {
        name: round(float(w), 4) for name, w in zip(FEATURES, weights, strict=False)
    }
    record.update(
        {
            "bias": round(bias, 4),
            "shots": shots,
            "products": len(parts[0]),
            "as_new": int(parts[2].sum()),
        }
    )
    return record


def encode_names(names: Sequence[str]) -> np.ndarray:
    from prodcat.encoders.registry import get_encoder

    return unit_rows(np.asarray(get_encoder(ZERO_SHOT_ENCODER).encode(list(names))))
