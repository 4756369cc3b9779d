"""Compare a batch with the reference: one test per signal, Holm's correction, a verdict.

Every test is two-sample: the reference is itself a sample (the validation part), and treating its
shares as exact would raise false alarms on batches that differ from it only by its own noise.

- shares (accept / review / unknown, photo present, title present): Fisher's exact test on the
  2 x 2 table (batch vs reference, yes vs no), the exact test of two binomial proportions;
- distributions (confidence, OOD score, photo size): the two-sample Kolmogorov-Smirnov test
  against the reference's bounded sample;
- the predicted class mix: the chi-square test of homogeneity on the 2 x K table, classes whose
  expected batch count is under 5 pooled so that the chi-square approximation holds.

Holm's step-down correction keeps the chance of any false alarm over all signals at `alpha`
(docs/monitoring.md says why Holm rather than Bonferroni).

scipy.stats is imported by the tests that use it, not with the module: a server imports this at
its start (~0.4 s for scipy.stats) and compares batches only when /metrics is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prodcat.monitor.observations import DECISIONS, Observations
from prodcat.monitor.reference import Reference

DEFAULT_ALPHA = 0.01  # the family-wise false-alarm rate per batch
MIN_VALUES = 10  # below this many values on either side a distribution is not tested
MIN_EXPECTED = 5.0  # the chi-square approximation's usual floor per cell
SHARES = {
    "accept_share": "accepted",
    "review_share": "sent to review",
    "unknown_share": "flagged unknown",
    "photo_share": "with a photo",
    "title_share": "with a title",
}
DISTRIBUTION_NAMES = {
    "confidence": "confidence",
    "ood_score": "OOD score",
    "photo_side": "photo size",
}


@dataclass
class Signal:
    """One test: its statistic (for a share: batch share - reference share), raw and
    Holm-adjusted p-values, and what it compared."""

    name: str
    test: str
    statistic: float
    p_value: float
    reference: Any
    batch: Any
    p_adjusted: float = 1.0
    fired: bool = False
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "drift": self.fired,
            "reference": self.reference,
            "batch": self.batch,
        }


@dataclass
class DriftReport:
    """The verdict: drift if any signal's Holm-adjusted p-value is at or below `alpha`."""

    n: int
    alpha: float
    signals: dict[str, Signal] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # signal -> why it was not tested

    @property
    def drift(self) -> bool:
        return any(s.fired for s in self.signals.values())

    @property
    def reasons(self) -> list[str]:
        fired = sorted((s for s in self.signals.values() if s.fired), key=lambda s: s.p_value)
        return [s.detail for s in fired]

    def as_dict(self) -> dict[str, Any]:
        return {
            "drift": self.drift,
            "reasons": self.reasons,
            "signals": {name: s.as_dict() for name, s in self.signals.items()},
            "skipped": self.skipped,
            "n": self.n,
            "alpha": self.alpha,
            "correction": "holm",
        }


def compare(
    reference: Reference,
    batch: Observations,
    *,
    alpha: float = DEFAULT_ALPHA,
    class_names: Sequence[str] | None = None,
) -> DriftReport:
    """Test every signal of `batch` against `reference`; see the module docstring."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha}; expected a false-alarm rate in (0, 1), e.g. 0.01")
    report = DriftReport(n=len(batch), alpha=alpha)
    if len(batch) == 0:
        report.skipped["all"] = "the batch is empty"
        return report
    signals = [*_share_signals(reference, batch), *_distribution_signals(reference, batch, report)]
    mix = _class_mix(reference, batch, class_names)
    if mix is None:
        report.skipped["class_mix"] = "fewer than two classes to compare"
    else:
        signals.append(mix)
    adjusted = holm([s.p_value for s in signals])
    for signal, p in zip(signals, adjusted, strict=True):
        signal.p_adjusted = p
        signal.fired = p <= alpha
        report.signals[signal.name] = signal
    return report


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject where adjusted <= alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _share_signals(reference: Reference, batch: Observations) -> list[Signal]:
    from scipy import stats

    counts = {
        **{f"{d}_share": (reference.decisions[d], int(np.sum(batch.decisions == d))) for d in
           DECISIONS if d in reference.decisions},
        "photo_share": (reference.has_photo, int(batch.has_photo.sum())),
        "title_share": (reference.has_title, int(batch.has_title.sum())),
    }  # fmt: skip
    out = []
    for name, (ref_yes, batch_yes) in counts.items():
        table = [[batch_yes, len(batch) - batch_yes], [ref_yes, reference.n - ref_yes]]
        _, p = stats.fisher_exact(table)
        ref_share, batch_share = ref_yes / reference.n, batch_yes / len(batch)
        detail = (
            f"{name.replace('_', ' ')}: {batch_share:.1%} of the batch {SHARES[name]} vs "
            f"{ref_share:.1%} at validation (Fisher p = {p:.2g})"
        )
        out.append(Signal(name, "fisher", batch_share - ref_share, float(p), ref_share, batch_share,
                          detail=detail))  # fmt: skip
    return out


def _distribution_signals(
    reference: Reference, batch: Observations, report: DriftReport
) -> list[Signal]:
    from scipy import stats

    out = []
    for name, label in DISTRIBUTION_NAMES.items():
        ref = reference.sample(name)
        values = getattr(batch, name)
        values = values[np.isfinite(values)]
        if len(ref) < MIN_VALUES or len(values) < MIN_VALUES:
            report.skipped[name] = (
                f"{len(values)} batch and {len(ref)} reference values; at least {MIN_VALUES} "
                "each are needed"
            )
            continue
        result = stats.ks_2samp(values, ref)
        ref_sum, batch_sum = _quantiles(ref), _quantiles(values)
        detail = (
            f"{label}: distribution differs (KS D = {result.statistic:.3f}, p = "
            f"{result.pvalue:.2g}; median {batch_sum['median']:.4g} vs {ref_sum['median']:.4g} "
            "at validation)"
        )
        out.append(Signal(name, "ks", float(result.statistic), float(result.pvalue), ref_sum,
                          batch_sum, detail=detail))  # fmt: skip
    return out


def _class_mix(
    reference: Reference, batch: Observations, class_names: Sequence[str] | None
) -> Signal | None:
    from scipy import stats

    k = len(reference.class_counts)
    if batch.predicted.size and (batch.predicted.min() < 0 or batch.predicted.max() >= k):
        raise ValueError(
            f"the batch predicts class indices up to {batch.predicted.max()} but the reference "
            f"knows {k} classes: the reference belongs to another model"
        )
    ref = np.asarray(reference.class_counts, dtype=np.float64)
    got = np.bincount(batch.predicted, minlength=k).astype(np.float64)
    table = pool_sparse(np.vstack([got, ref]))
    if table.shape[1] < 2:
        return None
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    ref_share, batch_share = ref / ref.sum(), got / got.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    top = int(np.argmax(np.abs(batch_share - ref_share)))
    detail = (
        f"class mix: the predicted classes differ (chi-square p = {p:.2g}); most changed: "
        f"{names[top]} {batch_share[top]:.1%} of the batch vs {ref_share[top]:.1%} at validation"
    )
    shares = {
        "reference": {names[i]: float(ref_share[i]) for i in range(k)},
        "batch": {names[i]: float(batch_share[i]) for i in range(k)},
    }
    return Signal("class_mix", "chi-square", float(chi2), float(p), shares["reference"],
                  shares["batch"], detail=detail)  # fmt: skip


def pool_sparse(table: np.ndarray) -> np.ndarray:
    """Columns of a 2 x K count table whose expected batch count (row 0) is under MIN_EXPECTED
    pooled into one; a pool still under it joins the smallest kept column."""
    table = table[:, table.sum(axis=0) > 0]
    expected = table.sum(axis=0) * table[0].sum() / table.sum()
    small = expected < MIN_EXPECTED
    if not small.any():
        return table
    kept = table[:, ~small]
    pooled = table[:, small].sum(axis=1, keepdims=True)
    if pooled.sum() * table[0].sum() / table.sum() >= MIN_EXPECTED or kept.shape[1] == 0:
        return np.hstack([kept, pooled])
    smallest = int(np.argmin(kept.sum(axis=0)))
    kept = kept.copy()
    kept[:, smallest] += pooled[:, 0]
    return kept


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {"p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "n": len(values)}


__all__ = ["DEFAULT_ALPHA", "DriftReport", "Signal", "compare", "holm", "pool_sparse"]
