"""evaluate(): a 3-class, 2-level case computed by hand, and its input checks."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from prodcat.training.metrics import MAX_CONFUSION_CLASSES, N_TOP_CONFUSIONS, evaluate

BACKPACKS, HANDBAGS, WATCHES = "Bags > Backpacks", "Bags > Handbags", "Watches > Watches"
CLASSES = [BACKPACKS, HANDBAGS, WATCHES]

# Per row: true class (None = unlabelled; "Shoes > Sneakers" is no model class) and probabilities.
ROWS: list[tuple[str | None, list[float]]] = [
    (BACKPACKS, [0.7, 0.2, 0.1]),  # right
    (BACKPACKS, [0.3, 0.6, 0.1]),  # wrong leaf (Handbags, 0.6), right at level 1 (Bags)
    (HANDBAGS, [0.1, 0.8, 0.1]),  # right
    (WATCHES, [0.1, 0.1, 0.8]),  # right
    (WATCHES, [0.05, 0.9, 0.05]),  # wrong at both levels (Handbags, 0.9): the worst error
    ("Shoes > Sneakers", [0.2, 0.5, 0.3]),  # out of class: said Handbags, must not count
    (None, [1.0, 0.0, 0.0]),  # unlabelled: skipped
]
TRUE = [t for t, _ in ROWS]
PROBA = np.array([p for _, p in ROWS])
IDS = [f"p{i}" for i in range(len(ROWS))]
TITLES = [f"title {i}" for i in range(len(ROWS))]
IMAGES = [f"/photos/{i}.jpg" for i in range(len(ROWS))]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return evaluate(TRUE, PROBA, CLASSES, ids=IDS, titles=TITLES, images=IMAGES)


def test_counts_keep_out_of_class_and_unlabelled_apart(metrics: dict) -> None:
    assert metrics["n_products"] == 7
    assert metrics["n_unlabelled"] == 1
    assert metrics["n_in_class"] == 5
    assert metrics["n_out_of_class"] == 1
    assert metrics["out_of_class_labels"] == {"Shoes > Sneakers": 1}
    assert metrics["out_of_class_examples"] == [
        {
            "id": "p5",
            "title": "title 5",
            "true": "Shoes > Sneakers",
            "pred": HANDBAGS,
            "confidence": 0.5,
        }
    ]


def test_scores_match_the_hand_computation(metrics: dict) -> None:
    # In class: rows 0-4, right: 0, 2, 3.
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    # Level 1 (Bags / Watches): only row 4 is wrong; level 2 is the full class.
    assert metrics["level_accuracy"] == pytest.approx([4 / 5, 3 / 5])
    # Three classes: the truth is always in the top 3.
    assert metrics["top3_accuracy"] == 1.0
    # Handbags is predicted for rows 1, 2, 4 (not 5: out of class) -> precision 1/3, recall 1/1.
    per_class = metrics["per_class"]
    assert per_class[BACKPACKS] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert per_class[HANDBAGS] == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1}
    )
    assert per_class[WATCHES] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_confusions(metrics: dict) -> None:
    assert metrics["confusion"] == {
        "labels": CLASSES,
        "matrix": [[1, 1, 0], [0, 1, 0], [0, 1, 1]],
    }
    assert metrics["top_confusions"] == [
        {"true": BACKPACKS, "pred": HANDBAGS, "count": 1},
        {"true": WATCHES, "pred": HANDBAGS, "count": 1},
    ]


def test_worst_errors_are_in_class_errors_most_confident_first(metrics: dict) -> None:
    worst = metrics["worst_errors"]
    assert [e["id"] for e in worst] == ["p4", "p1"]  # the out-of-class p5 is no error
    assert worst[0] == {
        "id": "p4",
        "title": "title 4",
        "image": "/photos/4.jpg",
        "true": WATCHES,
        "pred": HANDBAGS,
        "confidence": 0.9,
        "true_probability": 0.05,
    }
    assert [e["confidence"] for e in worst] == [0.9, 0.6]
    only_one = evaluate(TRUE, PROBA, CLASSES, n_worst=1)
    assert [e["id"] for e in only_one["worst_errors"]] == ["4"]  # row number without ids
    assert only_one["worst_errors"][0]["title"] is None


def test_result_is_json_serialisable(metrics: dict) -> None:
    assert json.loads(json.dumps(metrics)) == metrics


def test_top3_and_macro_f1_over_classes_present_in_the_truth() -> None:
    classes = ["A > a", "A > b", "B > c", "B > d", "B > e"]
    proba = np.array(
        [
            [0.10, 0.40, 0.30, 0.20, 0.00],  # true A > a ranks 4th: not in the top 3
            [0.20, 0.40, 0.30, 0.10, 0.00],  # true A > a ranks 3rd: in the top 3
            [0.10, 0.20, 0.60, 0.10, 0.00],  # true B > c ranks 1st
        ]
    )
    m = evaluate(["A > a", "A > a", "B > c"], proba, classes)
    assert m["top3_accuracy"] == pytest.approx(2 / 3)
    # Truth holds A > a (f1 0) and B > c (f1 1); A > b is predicted but absent from the truth,
    # so it is in per_class (its false positives show) but not in the macro average.
    assert m["macro_f1"] == pytest.approx(0.5)
    assert set(m["per_class"]) == {"A > a", "A > b", "B > c"}
    assert m["per_class"]["A > b"]["support"] == 0


def test_ties_go_to_the_first_column() -> None:
    m = evaluate(["A > b"], np.array([[0.5, 0.5]]), ["A > a", "A > b"])
    assert m["accuracy"] == 0.0
    assert m["worst_errors"][0]["pred"] == "A > a"


def test_nothing_in_class_gives_no_scores() -> None:
    # NaN is how pandas reads an empty label cell.
    true: list[Any] = [None, float("nan"), "", "Z > z"]
    m = evaluate(true, np.full((4, 2), 0.5), ["A > a", "A > b"])
    assert (m["n_unlabelled"], m["n_in_class"], m["n_out_of_class"]) == (3, 0, 1)
    assert m["accuracy"] is None and m["macro_f1"] is None and m["top3_accuracy"] is None
    assert m["level_accuracy"] == [] and m["per_class"] == {} and m["worst_errors"] == []
    assert m["confusion"]["matrix"] == [[0, 0], [0, 0]]
    json.dumps(m)


def test_many_classes_drop_the_matrix_and_cap_the_top_confusions() -> None:
    n_classes = MAX_CONFUSION_CLASSES + 5
    classes = [f"Dept > Class {k:02d}" for k in range(n_classes)]
    # Each class is always taken for the next one: n_classes distinct off-diagonal cells.
    true = [classes[k] for k in range(n_classes) for _ in range(k + 1)]
    proba = np.zeros((len(true), n_classes))
    for i, t in enumerate(true):
        proba[i, (classes.index(t) + 1) % n_classes] = 1.0
    m = evaluate(true, proba, classes)
    assert m["confusion"] is None
    top = m["top_confusions"]
    assert len(top) == N_TOP_CONFUSIONS
    assert top[0] == {"true": classes[-1], "pred": classes[0], "count": n_classes}
    assert [c["count"] for c in top] == sorted((c["count"] for c in top), reverse=True)
    assert m["accuracy"] == 0.0 and m["level_accuracy"] == [1.0, 0.0]


@pytest.mark.parametrize(
    ("proba", "fragment"),
    [
        (np.full((7, 2), 0.5), r"shape \(7, 2\); expected \(7, 3\)"),
        (np.full((6, 3), 0.5), r"shape \(6, 3\); expected \(7, 3\)"),
        (np.full(7, 0.5), r"shape \(7,\); expected \(7, 3\)"),
    ],
)
def test_proba_of_the_wrong_shape_is_refused(proba: np.ndarray, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        evaluate(TRUE, proba, CLASSES)


def test_other_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="ids has 2 entries; expected 7"):
        evaluate(TRUE, PROBA, CLASSES, ids=["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        evaluate(TRUE, PROBA, [BACKPACKS, BACKPACKS, WATCHES])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(TRUE, np.where(PROBA > 0.85, math.nan, PROBA), CLASSES)
    with pytest.raises(ValueError, match="n_worst"):
        evaluate(TRUE, PROBA, CLASSES, n_worst=-1)
    with pytest.raises(TypeError, match="single strings"):
        evaluate(BACKPACKS, PROBA, CLASSES)


def test_the_scores_are_scikit_learns() -> None:
    """evaluate computes them with NumPy (the base install has no scikit-learn): the same
    numbers as scikit-learn's metrics, on random labels over 8 classes of which one is never
    true and one never predicted."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    classes = [f"L{k // 4} > c{k}" for k in range(8)]
    rng = np.random.default_rng(3)
    true = [classes[k] for k in rng.choice(7, size=300)]  # classes[7] never true
    proba = rng.random((300, 8))
    proba[:, 6] = 0.0  # classes[6] never predicted
    m = evaluate(true, proba, classes)
    pred = [classes[k] for k in proba.argmax(axis=1)]
    shown = classes[:6] + classes[7:]
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=shown, zero_division=0
    )
    for k, c in enumerate(shown):
        assert m["per_class"][c] == {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
    assert m["per_class"][classes[7]]["support"] == 0 and m["per_class"][classes[6]]["f1"] == 0
    macro = f1_score(true, pred, labels=classes[:7], average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(float(macro), abs=1e-15)
    assert m["confusion"]["matrix"] == confusion_matrix(true, pred, labels=classes).tolist()
