"""The title head's fitted models as plain arrays, and what prediction does with them: a linear
model's logits (`LinearArrays`) and a random forest's probabilities (`ForestArrays`, a small NumPy
traversal of its trees' node arrays). Saved as safetensors, no pickle; NumPy and SciPy only, so the
base install predicts without scikit-learn, which fits them (`prodcat.heads.linear_models`)."""

# ruff: noqa: N803  (scikit-learn's names: X for inputs)

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

# Logit given to classes that only occur in rows without a title: far below every learnt class.
UNSEEN_LOGIT_GAP = 30.0
FAMILIES = ("l2", "l1", "rf")
# Log-probability floor for tree models' decision_logits (a forest gives exact zeros).
MIN_PROBA = 1e-12
# Cells of a densified block of X while walking the forest (~32 MB of float32).
FOREST_BLOCK_CELLS = 8_000_000


@dataclass
class LinearArrays:
    """logits = X @ coef.T + intercept, one row of coef per class (binary models made 2-row)."""

    coef: np.ndarray  # (n_classes, n_features) float64
    intercept: np.ndarray  # (n_classes,) float64

    def logits(self, X: scipy.sparse.csr_matrix) -> np.ndarray:
        """(n, n_classes) float64 scores."""
        return np.asarray(X @ self._coef_t()) + self.intercept

    def _coef_t(self) -> np.ndarray:
        """coef.T laid out C-contiguous, made once: scipy copies a transposed view on every
        product (14 MB per call on FULL's vocabulary), the same numbers either way."""
        cached = self.__dict__.get("_coef_t_cache")
        if cached is None or cached[0] is not self.coef:
            cached = (self.coef, np.ascontiguousarray(self.coef.T))
            self.__dict__["_coef_t_cache"] = cached
        transposed: np.ndarray = cached[1]
        return transposed

    def arrays(self) -> dict[str, np.ndarray]:
        """For safetensors."""
        return {"coef": self.coef, "intercept": self.intercept}


@dataclass
class ForestArrays:
    """A random forest as flat node arrays of all its trees (what safetensors can hold).

    ``left``/``right`` are global node indices (-1 at leaves), ``roots`` the first node of each
    tree, ``value`` the class fractions of each node normalised per node as scikit-learn does.
    The traversal compares float32 features with float64 thresholds, as scikit-learn does, so it
    reproduces `RandomForestClassifier.predict_proba` up to the order of floating-point sums.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    roots: np.ndarray

    @classmethod
    def from_sklearn(
        cls, forest: RandomForestClassifier, columns: np.ndarray, n_classes: int
    ) -> ForestArrays:
        """Flatten `forest`; its class k becomes column ``columns[k]`` of `n_classes`."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("left", "right", "feature", "thr")}
        values, roots, offset = [], [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            leaf = tree.children_left == -1
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["thr"].append(tree.threshold.astype(np.float64))
            value = tree.value[:, 0, :].astype(np.float64)
            norm = value.sum(axis=1, keepdims=True)
            norm[norm == 0.0] = 1.0
            full = np.zeros((tree.node_count, n_classes))
            full[:, columns] = value / norm
            values.append(full)
            roots.append(offset)
            offset += tree.node_count
        return cls(
            left=np.concatenate(parts["left"]).astype(np.int64),
            right=np.concatenate(parts["right"]).astype(np.int64),
            feature=np.concatenate(parts["feature"]).astype(np.int64),
            threshold=np.concatenate(parts["thr"]),
            value=np.concatenate(values),
            roots=np.array(roots, dtype=np.int64),
        )

    def proba(self, X: scipy.sparse.csr_matrix) -> np.ndarray:
        """(n, n_classes) mean of the trees' leaf class fractions."""
        n, n_features = X.shape
        out = np.zeros((n, self.value.shape[1]))
        block = max(1, min(4096, FOREST_BLOCK_CELLS // max(1, n_features)))
        for start in range(0, n, block):
            dense = X[start : start + block].toarray().astype(np.float32)
            leaves = self._leaves(dense)
            for t in range(leaves.shape[1]):
                out[start : start + block] += self.value[leaves[:, t]]
        out /= len(self.roots)
        return out

    def _leaves(self, dense: np.ndarray) -> np.ndarray:
        """(rows, n_trees) leaf reached by each row in each tree."""
        node = np.broadcast_to(self.roots, (dense.shape[0], len(self.roots))).copy()
        rows = np.arange(dense.shape[0])[:, None]
        while True:
            inner = self.left[node] != -1
            if not inner.any():
                return node
            go_left = dense[rows, self.feature[node]] <= self.threshold[node]
            step = np.where(go_left, self.left[node], self.right[node])
            node = np.where(inner, step, node)

    def arrays(self) -> dict[str, np.ndarray]:
        """For safetensors."""
        return {
            "forest_left": self.left,
            "forest_right": self.right,
            "forest_feature": self.feature,
            "forest_threshold": self.threshold,
            "forest_value": self.value,
            "forest_roots": self.roots,
        }
