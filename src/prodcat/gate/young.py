"""The gate and young classes: classes added to a model without retraining (`prodcat extend`).

A young class has no calibration products of its own, so the case thresholds (certified on the
head's classes) say nothing about it. Its products are accepted automatically only once its own
evidence certifies the target, with the same exact binomial test the gate uses for every class
(`certify_threshold`): the evidence is every product the extended model predicts as the young
class among (a) its own examples, each scored with its own example left out of the prototype
(right when it is one of the class), and (b) the model's stored validation sample (always wrong:
none of those products belongs to a young class). At 99.5% with delta 0.05 that needs 598 right
predictions at least (`min_accepted`), so a class added from 5 or 20 examples is never accepted;
a zero-shot category (no example, no evidence) never is.

The OOD score treats the examples as known products: their photo and title embeddings join the
neighbour banks and their title words the vocabulary (`with_known_examples`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from prodcat.encoders.words import words
from prodcat.gate.calibration import ACCEPT_NOTHING, DEFAULT_DELTA, certify_threshold
from prodcat.gate.gate import Gate
from prodcat.gate.ood import NeighbourDistance


def young_class_thresholds(
    gate: Gate,
    proba: np.ndarray,
    y: np.ndarray,
    young: Sequence[int],
    *,
    delta: float = DEFAULT_DELTA,
) -> tuple[dict[int, float], dict[int, dict[str, int]]]:
    """Per young class: its accept threshold (ACCEPT_NOTHING when its evidence certifies none)
    and the evidence counted (products predicted as it, how many were right).

    `proba`: the extended model's calibrated probabilities for the evidence products, `y` their
    true class index (-1 for none of the model's classes)."""
    predicted = np.asarray(proba).argmax(axis=1)
    confidence = np.asarray(proba).max(axis=1)
    correct = predicted == np.asarray(y)
    thresholds: dict[int, float] = {}
    evidence: dict[int, dict[str, int]] = {}
    for c in young:
        rows = predicted == c
        choice = certify_threshold(confidence[rows], correct[rows], gate.target_accuracy, delta)
        own = choice.threshold if choice.n_accepted else ACCEPT_NOTHING
        thresholds[c] = max(own, gate.accept_thresholds.get(gate.main_case, 0.0))
        evidence[c] = {"predicted": int(rows.sum()), "right": int(np.sum(rows & correct))}
    return thresholds, evidence


def with_young_classes(gate: Gate, thresholds: dict[int, float]) -> Gate:
    """A copy of `gate` whose every modality case holds the young classes to `thresholds`."""
    out = copy.deepcopy(gate)
    for case in out.accept_thresholds:
        limits = dict(out.class_thresholds.get(case, {}))
        limits.update(thresholds)
        out.class_thresholds[case] = limits
    return out


def with_known_examples(
    gate: Gate,
    *,
    image: np.ndarray | None,
    image_mask: np.ndarray,
    text: np.ndarray | None,
    text_mask: np.ndarray,
    texts: Sequence[str],
) -> Gate:
    """A copy of `gate` whose OOD scorer counts these examples as known products."""
    out = copy.deepcopy(gate)
    ood = out.ood
    if ood is None:
        return out
    for bank, values, mask in (
        (ood.image, image if gate.uses_image else None, image_mask),
        (ood.text, text if gate.uses_text else None, text_mask),
    ):
        if bank is not None and values is not None and np.any(mask):
            _add_to_bank(bank, values[np.asarray(mask, dtype=bool)])
    if gate.uses_text:
        present = [t for t, has in zip(texts, text_mask, strict=True) if has]
        ood.vocabulary = ood.vocabulary | {w for t in present for w in words(t, ood.token_pattern)}
    return out


def _add_to_bank(bank: NeighbourDistance, values: np.ndarray) -> None:
    # Rounded to float16 as the bank is saved, so a loaded model scores as this one.
    rows = bank.unit(values).astype(np.float16).astype(np.float32)
    bank.bank = np.vstack([bank.bank, rows])
