"""Confident learning over out-of-fold probabilities, with cleanlab (the kept library).

From each product's given class and its out-of-fold probabilities: the products whose label is
probably wrong (`cleanlab.filter.find_label_issues`, ranked), a suggested class for each, the
estimated share of wrong labels overall and per class (cleanlab's estimate of the joint of given
and true labels), and the pairs of classes the data cannot tell apart
(`cleanlab.dataset.find_overlapping_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cleanlab.count import compute_confident_joint, estimate_joint
from cleanlab.dataset import find_overlapping_classes
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

# How the flags are ranked and which filter finds them: chosen on the planted-noise benchmark
# (benchmarks/audit.py; docs/audit.md has the figures).
RANK_BY = "self_confidence"
FILTER_BY = "prune_by_noise_rate"
RANKINGS = ("self_confidence", "normalized_margin")
# Overlapping pairs with fewer products than this are left out of the table (noise of the estimate).
MIN_OVERLAP = 2


@dataclass(frozen=True)
class LabelIssues:
    """What confident learning found, in row positions of the audited products."""

    rows: np.ndarray  # flagged rows, most likely wrong first
    scores: np.ndarray  # per flagged row: 1 - cleanlab's label quality (higher = more suspect)
    suggested: np.ndarray  # per flagged row: the class index the probabilities prefer
    error_rate: float  # estimated share of wrong labels among the audited products
    class_error_rates: np.ndarray  # per class: estimated share of its given labels that are wrong
    overlap: list[dict[str, object]]  # pairs of classes, most overlapping first


def label_issues(
    y: np.ndarray, proba: np.ndarray, classes: Sequence[str], *, rank_by: str = RANK_BY
) -> LabelIssues:
    """Confident learning on given labels `y` (class indices) and out-of-fold `proba`."""
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by {rank_by!r}; expected one of {', '.join(RANKINGS)}")
    y = np.asarray(y, dtype=np.int64)
    joint_counts = compute_confident_joint(y, proba)
    rows = find_label_issues(
        y,
        proba,
        confident_joint=joint_counts,
        filter_by=FILTER_BY,
        return_indices_ranked_by=rank_by,
        n_jobs=1,  # cleanlab's multiprocessing forks the whole process: slower on 2 cores
    )
    rows = np.asarray(rows, dtype=np.int64)
    quality = get_label_quality_scores(y, proba, method=rank_by)
    others = proba.copy()
    others[np.arange(len(y)), y] = -1.0  # the suggestion is never the given class
    joint = estimate_joint(y, proba, confident_joint=joint_counts)
    given = joint.sum(axis=1)
    class_error = np.where(given > 0, 1.0 - np.diag(joint) / np.maximum(given, 1e-12), 0.0)
    return LabelIssues(
        rows=rows,
        scores=1.0 - quality[rows],
        suggested=others[rows].argmax(axis=1),
        error_rate=float(1.0 - np.trace(joint)),
        class_error_rates=class_error,
        overlap=class_overlap(y, proba, classes, joint_counts),
    )


def class_overlap(
    y: np.ndarray, proba: np.ndarray, classes: Sequence[str], joint_counts: np.ndarray
) -> list[dict[str, object]]:
    """Pairs of classes that could be either, most overlapping first (cleanlab's ranking by the
    joint probability): how many products are given one and confidently the other (the confident
    joint's counts, both directions), and what share of each class's products that is."""
    table = find_overlapping_classes(labels=y, pred_probs=proba, confident_joint=joint_counts)
    counts = np.bincount(y, minlength=len(classes))
    found = []
    for a, b, joint in table[["Class Index A", "Class Index B", "Joint Probability"]].itertuples(
        index=False
    ):
        a, b = int(a), int(b)
        a_as_b, b_as_a = int(joint_counts[a, b]), int(joint_counts[b, a])
        if a_as_b + b_as_a < MIN_OVERLAP:
            continue
        found.append(
            {
                "classes": [classes[a], classes[b]],
                "n_products": a_as_b + b_as_a,
                # Of class A's products, the share that could be B; of B's, the share that could
                # be A.
                "share_of_class": [_share(a_as_b, counts[a]), _share(b_as_a, counts[b])],
                "joint_probability": round(float(joint), 6),
            }
        )
    return found


def _share(n: int, total: int) -> float:
    return round(float(n) / max(int(total), 1), 4)
