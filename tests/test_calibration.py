"""Temperature scaling, ECE and the accept-threshold rule on synthetic scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import betainc
from scipy.stats import binom

from prodcat.gate.calibration import (
    ACCEPT_NOTHING,
    accuracy_lower_bound,
    certify_threshold,
    choose_threshold,
    clopper_pearson_upper,
    coverage_curve,
    expected_calibration_error,
    first_candidate,
    fit_temperature,
    min_accepted,
    softmax,
    unsupported_classes,
)
from prodcat.gate.ood import auroc, flagged_at


def test_threshold_stops_at_the_first_candidate_it_cannot_certify() -> None:
    # 3,000 products at confidences 1.000, 0.9997, ...; all right: every set certifies 99.5% (no
    # error in k: upper bound 1 - 0.05^(1/k) <= 0.5% from k = 598 on), so all are accepted.
    confidence = 1.0 - np.arange(3000) / 3000
    correct = np.ones(3000, dtype=bool)
    choice = certify_threshold(confidence, correct, 0.995)
    assert choice.threshold == pytest.approx(confidence[-1])
    assert (choice.n_calibration, choice.n_accepted, choice.errors) == (3000, 3000, 0)
    assert choice.guaranteed_accuracy == pytest.approx(0.05 ** (1 / 3000))
    # One confident error at rank 10 (label noise at the top): the first candidate is the top
    # 1,500 (half of 3,000; 2,100 with more products), where 1 error is fine (bound 0.32%); had
    # the sequence started at 598 products (bound 0.79% with that error) it would stop at once.
    assert first_candidate(0.995, 0.05, 3000) == 1500 and first_candidate(0.995) == 2100
    correct[10] = False
    assert certify_threshold(confidence, correct, 0.995).n_accepted == 3000
    assert clopper_pearson_upper(np.array(1), np.array(598), 0.05) > 0.005
    # Ten more errors at ranks 2,000-2,009: 4 errors in 2,003 pass (0.456%), 5 in 2,004 do not
    # (0.524%). The fixed sequence stops there, although the set of all 3,000 (11 errors) is
    # 99.63% right: going on past a failure would need a correction for the thresholds looked at.
    correct[2000:2010] = False
    choice = certify_threshold(confidence, correct, 0.995)
    assert choice.threshold == pytest.approx(confidence[2002])
    assert (choice.n_accepted, choice.errors) == (2003, 4)
    assert choice.guaranteed_accuracy == pytest.approx(
        1 - float(clopper_pearson_upper(np.array(4), np.array(2003), 0.05))
    )
    assert clopper_pearson_upper(np.array(5), np.array(2004), 0.05) > 0.005


def test_clopper_pearson_against_a_reference_computation() -> None:
    # The exact bound is the p where P(X <= errors | n, p) = delta (scipy's binomial CDF).
    for errors, n in ((0, 598), (3, 1000), (40, 10000)):
        upper = float(clopper_pearson_upper(np.array(errors), np.array(n), 0.05))
        assert binom.cdf(errors, n, upper) == pytest.approx(0.05, abs=1e-9)
    assert accuracy_lower_bound(997, 1000) == pytest.approx(
        1 - float(clopper_pearson_upper(np.array(3), np.array(1000), 0.05))
    )
    assert accuracy_lower_bound(0, 0) is None
    assert float(clopper_pearson_upper(np.array(5), np.array(5), 0.05)) == 1.0


def test_too_few_products_or_an_unreachable_target_accept_nothing_and_ties_stay_together() -> None:
    assert (min_accepted(0.995), min_accepted(0.95)) == (598, 59)
    confidence = 1.0 - np.arange(600) / 600
    assert choose_threshold(confidence[:597], np.ones(597, bool), 0.995) == ACCEPT_NOTHING
    assert choose_threshold(confidence[:598], np.ones(598, bool), 0.995) == pytest.approx(
        confidence[597]
    )
    confidence = np.full(500, 0.9)
    correct = np.arange(500) % 10 != 0  # 90% accurate, all at the same confidence
    choice = certify_threshold(confidence, correct, 0.995)
    assert choice.threshold == ACCEPT_NOTHING and choice.guaranteed_accuracy is None
    assert not (confidence >= ACCEPT_NOTHING).any()
    # At 85%: 50 errors in 500 (upper bound 12.3%) certify it; the tie is one candidate.
    choice = certify_threshold(confidence, correct, 0.85)
    assert choice.threshold == pytest.approx(0.9) and choice.n_accepted == 500
    with pytest.raises(ValueError, match="target accuracy"):
        choose_threshold(confidence, correct, 1.5)
    with pytest.raises(ValueError, match="delta"):
        certify_threshold(confidence, correct, 0.9, delta=0.0)


# Synthetic scores with a known answer: 1 - confidence ~ Beta(A, B) and a product is wrong with
# probability 1 - confidence (perfectly calibrated), so the accepted error at threshold t is
# E[u | u <= 1 - t] = A / (A + B) * I(1 - t; A + 1, B) / I(1 - t; A, B).
A, B = 0.25, 12.0


def _true_error(threshold: float) -> float:
    cut = 1.0 - threshold
    if cut <= 0:
        return 0.0
    return A / (A + B) * betainc(A + 1, B, cut) / betainc(A, B, cut)


def test_the_bound_holds_in_at_least_95_percent_of_simulated_draws() -> None:
    rng = np.random.default_rng(15)
    target, n, draws = 0.99, 2000, 400
    certified, naive, coverage = 0, 0, []
    for _ in range(draws):
        u = rng.beta(A, B, size=n)
        confidence, correct = 1.0 - u, rng.random(n) >= u
        threshold = choose_threshold(confidence, correct, target)
        certified += _true_error(threshold) <= 1 - target
        coverage.append(float(np.mean(confidence >= threshold)))
        naive += _true_error(_point_estimate_threshold(confidence, correct, target)) <= 1 - target
    assert certified / draws >= 0.95
    # The rule is not vacuous: it accepts most products (80% on average here) ...
    assert np.mean(coverage) > 0.75
    # ... and the test can fail: the point estimate alone breaks the promise about half the time.
    assert naive / draws < 0.8


def _point_estimate_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest threshold whose accepted products reach `target` as measured (no bound)."""
    order = np.argsort(-confidence)
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    return float(confidence[order][np.flatnonzero(accuracy >= target)[-1]])


def test_classes_whose_own_evidence_contradicts_the_target_are_blocked() -> None:
    # class 0: 1,000 accepted, 2 wrong (fine at 99.5%); class 1: 100 accepted, 5 wrong (P(X >= 5)
    # at 0.5% is 0.0017: blocked); class 2: nothing accepted (no evidence: blocked); class 3: 10
    # accepted, none wrong (no evidence against: kept); class 4: 100 accepted, 2 wrong (P = 0.09:
    # kept).
    predicted = np.repeat([0, 1, 2, 3, 4], [1000, 100, 50, 10, 100])
    accepted = predicted != 2
    correct = np.ones(len(predicted), dtype=bool)
    correct[[0, 1]] = False
    correct[1000:1005] = False
    correct[1160:1162] = False
    assert unsupported_classes(predicted, correct, accepted, 5, 0.995) == [1, 2]
    assert unsupported_classes(predicted, correct, accepted, 5, 0.9) == [2]


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
