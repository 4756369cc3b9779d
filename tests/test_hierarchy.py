"""Taxonomy-aware outputs: node sums, per-level probabilities, greedy back-off, level accuracy.

Hand-made 2- and 3-level examples whose answers can be checked by eye.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodcat.taxonomy.probabilities import (
    ancestor_matrix,
    back_off,
    level_accuracy,
    level_probabilities,
    node_probabilities,
)

SHOES = [
    "Apparel > Topwear > Tshirts",
    "Footwear > Sandal > Sandals",
    "Footwear > Shoes > Casual Shoes",
    "Footwear > Shoes > Sandals",  # same leaf name as above, another parent: another class
    "Footwear > Shoes > Sports Shoes",
]
TWO_LEVEL = ["Bags > Backpacks", "Bags > Handbags", "Watches > Watches"]


def test_ancestor_matrix_maps_each_class_to_itself_and_its_ancestors() -> None:
    nodes, matrix = ancestor_matrix(TWO_LEVEL)
    assert nodes == [
        "Bags",
        "Bags > Backpacks",
        "Bags > Handbags",
        "Watches",
        "Watches > Watches",
    ]
    assert matrix.toarray().tolist() == [
        [1, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 0, 0, 1, 1],
    ]


def test_leaf_names_under_two_parents_stay_apart() -> None:
    nodes, matrix = ancestor_matrix(SHOES)
    assert "Footwear > Sandal > Sandals" in nodes and "Footwear > Shoes > Sandals" in nodes
    assert len(nodes) == 1 + 1 + 1 + 1 + 2 + 4  # 2 roots, 3 middles, 5 leaves
    assert matrix.shape == (5, 10) and (matrix.sum(axis=1) == 3).all()


def test_node_probabilities_sum_leaves_up_the_tree() -> None:
    proba = np.array([[0.5, 0.2, 0.3], [0.0, 0.1, 0.9]])
    nodes, node_proba = node_probabilities(proba, TWO_LEVEL)
    got = {node: node_proba[:, j].round(12).tolist() for j, node in enumerate(nodes)}
    assert got == {
        "Bags": [0.7, 0.1],
        "Bags > Backpacks": [0.5, 0.0],
        "Bags > Handbags": [0.2, 0.1],
        "Watches": [0.3, 0.9],
        "Watches > Watches": [0.3, 0.9],
    }


def test_level_probabilities_follow_the_predicted_leaf() -> None:
    proba = np.array([[0.05, 0.0, 0.45, 0.04, 0.46], [0.6, 0.1, 0.1, 0.1, 0.1]])
    levels = level_probabilities(proba, SHOES)
    assert list(levels[0]) == ["Footwear", "Footwear > Shoes", "Footwear > Shoes > Sports Shoes"]
    assert list(levels[0].values()) == pytest.approx([0.95, 0.95, 0.46])
    assert levels[1] == pytest.approx(
        {"Apparel": 0.6, "Apparel > Topwear": 0.6, "Apparel > Topwear > Tshirts": 0.6}
    )


def test_back_off_stops_at_the_confident_parent_when_two_leaves_split_the_mass() -> None:
    # Sports 0.45 and Casual 0.45: no leaf reaches 0.8 but "Footwear > Shoes" (0.9) does.
    proba = np.array([[0.05, 0.05, 0.45, 0.0, 0.45]])
    [(node, confidence)] = back_off(proba, SHOES, min_confidence=0.8)
    assert node == "Footwear > Shoes" and confidence == pytest.approx(0.9)
    [(node, confidence)] = back_off(proba, SHOES, min_confidence=0.93)
    assert node == "Footwear" and confidence == pytest.approx(0.95)
    [(node, confidence)] = back_off(proba, SHOES, min_confidence=0.4)
    assert node == "Footwear > Shoes > Casual Shoes"  # ties go to the first (sorted) child


def test_back_off_to_the_root_when_no_level_one_node_is_confident() -> None:
    proba = np.array([[0.5, 0.1, 0.2, 0.1, 0.1]])  # Apparel 0.5, Footwear 0.5
    assert back_off(proba, SHOES, min_confidence=0.8) == [("", 1.0)]


def test_back_off_descends_greedily_rather_than_from_the_argmax_leaf() -> None:
    # The best single leaf is Watches (0.4), but Bags holds 0.6: the descent takes Bags.
    proba = np.array([[0.3, 0.3, 0.4]])
    assert back_off(proba, TWO_LEVEL, min_confidence=0.0) == [("Bags > Backpacks", 0.3)]
    assert back_off(proba, TWO_LEVEL, min_confidence=0.5) == [("Bags", pytest.approx(0.6))]


def test_level_accuracy_known_answer() -> None:
    true = [
        "Footwear > Shoes > Sports Shoes",
        "Footwear > Shoes > Casual Shoes",
        "Apparel > Topwear > Tshirts",
        "Bags > Backpacks",  # a 2-level class: counted at levels 1 and 2 only
    ]
    pred = [
        "Footwear > Shoes > Sports Shoes",  # right at every level
        "Footwear > Shoes",  # backed off: right at 1-2, wrong at 3
        "Footwear > Shoes > Sports Shoes",  # wrong everywhere
        "",  # the root: wrong at every level
    ]
    assert level_accuracy(true, pred) == [2 / 4, 2 / 4, 1 / 3]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: node_probabilities(np.ones((2, 4)), TWO_LEVEL), r"expected \(n_products, 3\)"),
        (lambda: back_off(np.ones((1, 3)) / 3, TWO_LEVEL, 1.5), r"expected a number in \[0, 1\]"),
        (lambda: ancestor_matrix(["A > B", "A > B"]), "duplicates"),
        (lambda: ancestor_matrix(["A >  > B"]), "empty level"),
        (lambda: level_accuracy(["A"], ["A", "B"]), "true has 1 paths but pred has 2"),
    ],
)
def test_bad_inputs_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=2**32 - 1))
def test_every_level_sums_to_one(n_products: int, seed: int) -> None:
    """Each depth of a full-depth taxonomy partitions the leaves, so its nodes sum to 1."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(len(SHOES)), size=n_products)
    nodes, node_proba = node_probabilities(proba, SHOES)
    for depth in (1, 2, 3):
        columns = [j for j, node in enumerate(nodes) if node.count(" > ") == depth - 1]
        assert np.allclose(node_proba[:, columns].sum(axis=1), 1.0)
    for node, confidence in back_off(proba, SHOES, min_confidence=0.5):
        assert confidence >= 0.5 or node == ""
