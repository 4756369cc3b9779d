"""Temperature scaling, ECE and the accept-threshold rule on synthetic scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.gate.calibration import (
    ACCEPT_NOTHING,
    choose_threshold,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    min_accepted,
    softmax,
)
from prodcat.gate.ood import auroc, flagged_at


def test_threshold_is_the_lowest_that_keeps_the_target() -> None:
    # 1,000 products at confidences 1.000, 0.999, ...; errors at ranks 300, 350 and 400.
    # At 99%: 1 error in 301, 2 in 351, 3 in 401 (0.75%) all pass, and the rest are right, so
    # every product is accepted.
    confidence = 1.0 - np.arange(1000) / 1000
    correct = np.ones(1000, dtype=bool)
    correct[[300, 350, 400]] = False
    assert choose_threshold(confidence, correct, 0.99) == pytest.approx(confidence[-1])
    # At 99.5% (at most 1 error per 200 accepted): 3 errors in 1,000 pass, so all are accepted.
    assert choose_threshold(confidence, correct, 0.995) == pytest.approx(confidence[-1])
    # Errors at ranks 300, 350, 450, 500, 600, 700: the first 450 hold 2 (0.44%) and pass; every
    # larger set fails (3 in 451..500, 4 in 501..600, 5 in 601..700, 6 in 701..1,000, each over
    # 0.5%): the lowest threshold that keeps the target is the confidence of rank 449.
    correct[:] = True
    correct[[300, 350, 450, 500, 600, 700]] = False
    assert choose_threshold(confidence, correct, 0.995) == pytest.approx(confidence[449])


def test_confident_errors_at_the_top_do_not_veto_a_good_threshold() -> None:
    # Two errors among the 30 most confident (label noise), then a long correct run: the set of
    # the top 2,000 is 99.85% right, and the threshold goes down to where it stops being >= 99.5%.
    confidence = 1.0 - np.arange(3000) / 3000
    correct = np.ones(3000, dtype=bool)
    correct[[10, 20]] = False
    correct[2000:] = np.arange(1000) % 5 != 0  # 80% right below rank 2,000
    threshold = choose_threshold(confidence, correct, 0.995)
    k = int((confidence >= threshold).sum())
    assert correct[:k].mean() >= 0.995
    assert correct[: k + 5].mean() < 0.995  # the next run with an error breaks it
    assert 2000 < k < 2100
    # Fewer than 200 products cannot show 99.5%: nothing is accepted, however right they are.
    assert choose_threshold(confidence[:150], np.ones(150, bool), 0.995) == ACCEPT_NOTHING


def test_an_unreachable_target_accepts_nothing_and_ties_are_kept_together() -> None:
    confidence = np.full(500, 0.9)
    correct = np.arange(500) % 10 != 0  # 90% accurate, all at the same confidence
    assert choose_threshold(confidence, correct, 0.995) == ACCEPT_NOTHING
    assert not (confidence >= ACCEPT_NOTHING).any()
    assert choose_threshold(confidence, correct, 0.85) == pytest.approx(0.9)
    assert min_accepted(0.995) == 200
    with pytest.raises(ValueError, match="target accuracy"):
        choose_threshold(confidence, correct, 1.5)


def test_temperature_recovers_the_one_that_made_the_data() -> None:
    # Labels drawn from softmax(logits / 2): the NLL-optimal temperature is close to 2.
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(20_000, 5))
    proba = softmax(logits, 2.0)
    y = np.array([rng.choice(5, p=p) for p in proba])
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(logits[:0], y[:0]) == 1.0


def test_ece_is_zero_when_calibrated_and_large_when_overconfident() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 50_000)
    calibrated = rng.uniform(size=50_000) < confidence
    assert expected_calibration_error(confidence, calibrated) < 0.01
    overconfident = rng.uniform(size=50_000) < confidence - 0.2
    assert expected_calibration_error(confidence, overconfident) == pytest.approx(0.2, abs=0.01)
    assert expected_calibration_error(np.zeros(0), np.zeros(0, bool)) is None


def test_coverage_curve_ends_at_full_coverage() -> None:
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, False, True])
    curve = coverage_curve(confidence, correct, n_points=4)
    assert [p["coverage"] for p in curve] == [0.25, 0.5, 0.75, 1.0]
    assert [p["accuracy"] for p in curve] == pytest.approx([1, 1, 2 / 3, 0.75])


def test_auroc_and_flagged_at_95() -> None:
    inside = np.arange(100.0)
    assert auroc(inside, inside + 1000) == 1.0
    assert auroc(inside, inside) == pytest.approx(0.5)
    # 95% of in-class pass below 95 (the 95th value): out-of-class above it are flagged.
    assert flagged_at(inside, np.array([10.0, 96.0, 200.0, 50.0])) == pytest.approx(0.5)
    assert flagged_at(np.zeros(10), np.zeros(5)) == 0.0  # a constant score flags nothing
