"""Taxonomy-aware use of a head's leaf probabilities.

A head scores full class paths ("Footwear > Shoes > Sports Shoes"). Summing those probabilities
up the tree gives every inner node's probability, so an uncertain product can be filed at a
shallower but correct node ("Footwear > Shoes") instead of a wrong leaf, and accuracy can be
read per level of the taxonomy.

Paths are compared as strings split on `SEPARATOR`; a leaf name under two parents is two classes
("Footwear > Sandal > Sandals" and "Footwear > Shoes > Sandals"), and the root is "".
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse

SEPARATOR = " > "
ROOT = ""


def split_path(path: str) -> list[str]:
    """``"Footwear > Shoes"`` -> ``["Footwear", "Shoes"]``; the root "" has no levels."""
    return path.split(SEPARATOR) if path else []


def prefixes(path: str) -> list[str]:
    """Every ancestor of a path and the path itself, root-first (the root "" excluded)."""
    levels = split_path(path)
    return [SEPARATOR.join(levels[:k]) for k in range(1, len(levels) + 1)]


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise TypeError("classes is a single string; expected a sequence of class paths")
    return list(_checked(tuple(str(c) for c in classes)))


@functools.lru_cache(maxsize=16)  # every prediction checks the model's same class list
def _checked(out: tuple[str, ...]) -> tuple[str, ...]:
    if not out:
        raise ValueError("classes is empty; expected the class paths of the model's columns")
    duplicates = sorted(c for c, count in Counter(out).items() if count > 1)
    if duplicates:
        raise ValueError(f"classes has duplicates {duplicates}; expected one column per class")
    for path in out:
        if not path or any(not level.strip() for level in split_path(path)):
            raise ValueError(
                f"class {path!r} has an empty level; expected levels joined by {SEPARATOR!r}, "
                "e.g. 'Footwear > Shoes > Sports Shoes'"
            )
    return out


def _check_proba(proba: np.ndarray, n_classes: int) -> np.ndarray:
    array = np.asarray(proba, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != n_classes:
        raise ValueError(
            f"proba has shape {array.shape}; expected (n_products, {n_classes}), one column per "
            "class in the order of classes"
        )
    return array


def ancestor_matrix(classes: Sequence[str]) -> tuple[list[str], scipy.sparse.csr_matrix]:
    """(nodes, A): every node (each prefix of each class, sorted) and the 0/1 leaf->node matrix.

    ``A[i, j] = 1`` when node j is class i or one of its ancestors, so ``proba @ A`` sums leaf
    probabilities up to every node. Built once per class list (every prediction asks for it);
    treat the result as read-only.
    """
    checked = _check_classes(classes)
    return _ancestor_matrix(tuple(checked))


@functools.lru_cache(maxsize=16)
def _ancestor_matrix(checked: tuple[str, ...]) -> tuple[list[str], scipy.sparse.csr_matrix]:
    nodes = _nodes(checked)
    index = {node: j for j, node in enumerate(nodes)}
    rows, cols = [], []
    for i, path in enumerate(checked):
        for node in prefixes(path):
            rows.append(i)
            cols.append(index[node])
    data = np.ones(len(rows), dtype=np.float64)
    matrix = scipy.sparse.csr_matrix((data, (rows, cols)), shape=(len(checked), len(nodes)))
    return nodes, matrix


def _nodes(checked: tuple[str, ...]) -> list[str]:
    return sorted({node for path in checked for node in prefixes(path)})


@functools.lru_cache(maxsize=16)
def _paths(checked: tuple[str, ...]) -> tuple[np.ndarray, list[tuple[str, list[int]]]]:
    """Each class's node column, and its path's nodes with their columns (root-first)."""
    index = {node: j for j, node in enumerate(_nodes(checked))}
    columns = np.array([index[c] for c in checked])
    return columns, [(c, [index[n] for n in prefixes(c)]) for c in checked]


def node_probabilities(proba: np.ndarray, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(nodes, (n, n_nodes) probabilities): each node gets the summed mass of its leaves."""
    nodes, matrix = ancestor_matrix(classes)
    array = _check_proba(proba, matrix.shape[0])
    return nodes, np.asarray((matrix.T @ array.T).T)


def level_probabilities(proba: np.ndarray, classes: Sequence[str]) -> list[dict[str, float]]:
    """Per product, {node: probability} for each level of its most probable class, root-first.

    E.g. ``{"Footwear": 0.9, "Footwear > Shoes": 0.9, "Footwear > Shoes > Sports Shoes": 0.45}``:
    how sure the model is of the predicted path at every depth.
    """
    checked = _check_classes(classes)
    _, node_proba = node_probabilities(proba, checked)
    columns, paths = _paths(tuple(checked))
    best = np.argmax(node_proba[:, columns], axis=1)
    out = []
    for i, k in enumerate(best):
        path, path_columns = paths[k]
        values = node_proba[i, path_columns].tolist()
        out.append(dict(zip(prefixes(path), values, strict=True)))
    return out


def _children(nodes: list[str]) -> dict[str, np.ndarray]:
    """parent path -> positions of its child nodes in `nodes` (the root's key is "")."""
    groups: dict[str, list[int]] = {}
    for j, node in enumerate(nodes):
        parent = SEPARATOR.join(split_path(node)[:-1])
        groups.setdefault(parent, []).append(j)
    return {parent: np.array(kids) for parent, kids in groups.items()}


def back_off(
    proba: np.ndarray, classes: Sequence[str], min_confidence: float
) -> list[tuple[str, float]]:
    """Per product, (node, probability): the deepest confident node of a greedy descent.

    From the root, step to the most probable child while its probability is at least
    `min_confidence`; stop at the last node reached ("" with probability 1.0 when no level-1
    node qualifies). Descending greedily, rather than backing off from the argmax leaf, is what
    gives "Footwear > Shoes" when two Shoes leaves split the mass 0.45/0.45: no leaf is sure, but
    their parent is.
    """
    if not isinstance(min_confidence, int | float) or not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence={min_confidence!r}; expected a number in [0, 1]")
    nodes, node_proba = node_probabilities(proba, classes)
    children = _children(nodes)
    out: list[tuple[str, float]] = []
    for row in node_proba:
        node, confidence = ROOT, 1.0
        while node in children:
            kids = children[node]
            best = kids[np.argmax(row[kids])]
            if row[best] < min_confidence:
                break
            node, confidence = nodes[best], float(row[best])
        out.append((node, confidence))
    return out


def level_accuracy(true: Sequence[str], pred: Sequence[str]) -> list[float]:
    """Accuracy at each depth k = 1..max depth: do the first k levels of pred and true agree?

    A product counts at depth k only if its true path has at least k levels. A prediction
    shallower than k (a backed-off node, or the root "") is wrong at depth k.
    """
    if isinstance(true, str) or isinstance(pred, str):
        raise TypeError("true and pred must be sequences of class paths, not single strings")
    true_levels = [split_path(t) for t in true]
    pred_levels = [split_path(p) for p in pred]
    if len(true_levels) != len(pred_levels):
        raise ValueError(
            f"true has {len(true_levels)} paths but pred has {len(pred_levels)}; expected one "
            "prediction per product"
        )
    if not true_levels:
        raise ValueError("true and pred are empty; accuracy needs at least one product")
    depth = max(len(levels) for levels in true_levels)
    scores = []
    for k in range(1, depth + 1):
        pairs = [(t, p) for t, p in zip(true_levels, pred_levels, strict=True) if len(t) >= k]
        scores.append(sum(t[:k] == p[:k] for t, p in pairs) / len(pairs))
    return scores
