"""Cross-fitted calibration logits: every training and validation product scored out of fold.

The shipped head is trained as before (training part, validation for early stopping); this only
gives the gate more products to calibrate on. The labelled products are cut into k folds by their
near-duplicate group (`prodcat.catalogue.split.group_keys`, so copies of one photo never sit on both
sides), a fresh head of the same kind is fitted on k - 1 folds, and the held-out fold is scored
with each modality case shown alone, as the gate does with validation products. Every in-class
product is scored once by a head that never saw it, so the temperatures and thresholds rest on
about nine times as many products as the validation part alone holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from prodcat.catalogue import Product
from prodcat.catalogue.split import group_keys
from prodcat.gate.certificate import CaseData
from prodcat.gate.gate import modality_cases, model_cases
from prodcat.heads import Head, Inputs
from prodcat.heads.inputs import restrict

DEFAULT_FOLDS = 5
# Logit given to a class a fold's head never saw (a small class missing from its k - 1 folds):
# this far below the row's lowest, so its probability is ~e^-30 at any fitted temperature.
MISSING_CLASS_MARGIN = 30.0


def fold_of(products: Sequence[Product], folds: int, seed: int = 0) -> np.ndarray:
    """Each product's fold, 0..folds-1: a hash of its near-duplicate group's key and the seed."""
    return np.array(
        [
            int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) % folds
            for key in group_keys(products)
        ],
        dtype=np.int64,
    )


def cross_fitted_logits(
    make_head: Callable[[], Head],
    products: Sequence[Product],
    inputs: Inputs,
    y: np.ndarray,
    classes: Sequence[str],
    *,
    uses_image: bool,
    uses_text: bool,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> CaseData:
    """Per modality case, (out-of-fold logits in `classes`' column order, class indices) of the
    in-class products (`y` >= 0; -1 marks a product of a class the model lacks)."""
    if folds < 2:
        raise ValueError(f"calibration folds {folds}; expected 2 or more (0 turns it off)")
    y = np.asarray(y)
    fold = fold_of(products, folds, seed)
    cases = model_cases(uses_image, uses_text)
    found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {case: [] for case in cases}
    for f in range(folds):
        fit_rows = np.flatnonzero((fold != f) & (y >= 0))
        held = np.flatnonzero((fold == f) & (y >= 0))
        if len(held) == 0 or len(np.unique(y[fit_rows])) < 2:
            continue
        head = make_head()
        head.fit(inputs.subset(fit_rows), [classes[i] for i in y[fit_rows]])
        for case in cases:
            shown = restrict(inputs.subset(held), case.split("+"))
            rows = modality_cases(shown, uses_image, uses_text) == case
            if rows.any():
                logits = _in_model_columns(head, head.decision_logits(shown.subset(rows)), classes)
                found[case].append((logits, y[held][rows]))
    return {
        case: (np.concatenate([lg for lg, _ in parts]), np.concatenate([t for _, t in parts]))
        for case, parts in found.items()
        if parts
    }


def _in_model_columns(head: Head, logits: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """A fold head's logits spread into the model's class columns (missing classes far below)."""
    index = {c: j for j, c in enumerate(classes)}
    out = np.repeat(logits.min(axis=1, keepdims=True) - MISSING_CLASS_MARGIN, len(classes), axis=1)
    out[:, [index[str(c)] for c in head.classes_]] = logits
    return out
