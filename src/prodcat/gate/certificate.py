"""The accept thresholds' evidence: the classes' own thresholds and the certificate's record.

Applied by `prodcat.gate.gate.fit_gate` once each case's temperature and certified threshold are
set; pure functions of the gate and the calibration products' logits (docs/gate.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from prodcat.gate.calibration import (
    ThresholdChoice,
    accuracy_lower_bound,
    certify_threshold,
    softmax,
    unsupported_classes,
)

if TYPE_CHECKING:
    from prodcat.gate.gate import Gate

# Per modality case: (logits, class indices) of the calibration products.
CaseData = dict[str, tuple[np.ndarray, np.ndarray]]


def calibrated(
    gate: Gate, case: str, logits: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted class, correct, accepted for one case's calibration products (the classes' own
    thresholds applied)."""
    proba = softmax(logits, gate.temperatures[case])
    predicted = proba.argmax(axis=1)
    limits = np.array([gate.accept_limit(case, int(k)) for k in predicted], dtype=np.float64)
    return predicted, predicted == y, proba.max(axis=1) >= limits


def class_thresholds(
    gate: Gate, case: str, logits: np.ndarray, y: np.ndarray, n_classes: int, delta: float
) -> dict[int, float]:
    """Own thresholds for the classes whose accepted products at the case's threshold cannot
    support the target: certified on that class's calibration products alone (never below the
    case's); ACCEPT_NOTHING where none can be."""
    predicted, correct, accepted = calibrated(gate, case, logits, y)
    confidence = softmax(logits, gate.temperatures[case]).max(axis=1)
    out = {}
    for c in unsupported_classes(
        predicted, correct, accepted, n_classes, gate.target_accuracy, delta
    ):
        rows = predicted == c
        own = certify_threshold(confidence[rows], correct[rows], gate.target_accuracy, delta)
        out[c] = max(own.threshold, gate.accept_thresholds[case])
    return out


def guarantee_record(
    gate: Gate,
    calibration: CaseData,
    choices: dict[str, ThresholdChoice],
    delta: float,
    folds: int,
) -> dict[str, Any]:
    """The evidence behind the thresholds, per case and (the top level) for the main case.

    The photo-only and title-only cases are the same products with one modality hidden, so their
    evidence is not added up: the headline figures are the main case's, with its blocked classes
    left out of the accepted set (what the gate really accepts).
    """
    cases: dict[str, Any] = {}
    for case, choice in choices.items():
        _, correct, accepted = calibrated(gate, case, *calibration[case])
        right, n_accepted = int(np.sum(accepted & correct)), int(accepted.sum())
        cases[case] = {
            **choice.summary(),
            "n_accepted": n_accepted,
            "errors": n_accepted - right,
            "accepted_accuracy": right / n_accepted if n_accepted else None,
            "guaranteed_accuracy": accuracy_lower_bound(right, n_accepted, delta),
        }
    main = cases.get(gate.main_case, {})
    return {
        "method": "learn-then-test, fixed sequence, one-sided Clopper-Pearson",
        "delta": delta,
        "calibration": f"cross-fitted, {folds} folds" if folds else "validation part",
        "case": gate.main_case,
        "n_calibration": main.get("n_calibration", 0),
        "n_accepted": main.get("n_accepted", 0),
        "accepted_accuracy": main.get("accepted_accuracy"),
        "guaranteed_accuracy": main.get("guaranteed_accuracy"),
        "cases": cases,
    }
