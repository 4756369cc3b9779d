"""The title head's model families as plain arrays: L2- and L1-regularised logistic regression
and a random forest, their search spaces, how each is built and fitted, and the arrays a fitted
one is saved as (`LinearArrays`, `ForestArrays`: safetensors, no pickle)."""

# ruff: noqa: N803  (scikit-learn's names: X for inputs, C for inverse regularisation)

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from scipy.stats import loguniform
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterSampler
from sklearn.multiclass import OneVsRestClassifier
from threadpoolctl import threadpool_limits

# Logit given to classes that only occur in rows without a title: far below every learnt class.
UNSEEN_LOGIT_GAP = 30.0
FAMILIES = ("l2", "l1", "rf")
# Log-probability floor for tree models' decision_logits (a forest gives exact zeros).
MIN_PROBA = 1e-12
# Cells of a densified block of X while walking the forest (~32 MB of float32).
FOREST_BLOCK_CELLS = 8_000_000

SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "l2": {"C": loguniform(1e-2, 1e3)},
    "l1": {"C": loguniform(1e-1, 1e3)},
    "rf": {
        "n_estimators": [50, 100, 200],
        "max_depth": [None, 25, 50, 100],
        "min_samples_leaf": [1, 2, 3, 5],
    },
}


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


def linear_from_sklearn(
    model: LogisticRegression | OneVsRestClassifier, columns: np.ndarray, n_classes: int
) -> LinearArrays:
    """Coefficients of a fitted (multinomial or one-vs-rest) logistic regression, as logits.

    A binary model has one row w; it becomes rows (0, w), whose softmax is its sigmoid. Classes
    the model never saw get zero weights and an intercept far below the learnt ones.
    """
    if isinstance(model, OneVsRestClassifier):
        coef = np.vstack([est.coef_ for est in model.estimators_])
        intercept = np.concatenate([np.ravel(est.intercept_) for est in model.estimators_])
    else:
        coef, intercept = model.coef_, np.ravel(model.intercept_)
    coef, intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    if coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    full_coef = np.zeros((n_classes, coef.shape[1]))
    full_intercept = np.full(n_classes, intercept.min() - UNSEEN_LOGIT_GAP)
    full_coef[columns], full_intercept[columns] = coef, intercept
    return LinearArrays(full_coef, full_intercept)


def make_model(
    family: str, params: dict[str, Any], *, max_iter: int, random_state: int, n_jobs: int | None
) -> LogisticRegression | OneVsRestClassifier | RandomForestClassifier:
    """An unfitted model of `family` ("l2" lbfgs multinomial, "l1" liblinear OvR, "rf"); the
    same `random_state` gives the same fitted model."""
    if family == "l2":
        return LogisticRegression(C=params["C"], solver="lbfgs", max_iter=max_iter)
    if family == "l1":
        # liblinear is binary-only in scikit-learn >= 1.8, and much faster than saga for L1 on
        # sparse words; one-vs-rest gives one binary model per class. liblinear visits the
        # features in a random order: without a seed it draws one from numpy's global RNG, and
        # two identical trainings gave different models (title-only test accuracy 96.15% and
        # 95.38% in two `prodcat demo` runs).
        binary = LogisticRegression(
            C=params["C"],
            l1_ratio=1.0,
            solver="liblinear",
            max_iter=max_iter,
            random_state=random_state,
        )
        return OneVsRestClassifier(binary)  # n_jobs here would spawn processes: slower on 2 cores
    return RandomForestClassifier(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        min_samples_leaf=params["min_samples_leaf"],
        random_state=random_state,
        n_jobs=n_jobs,
    )


def fit_model(model: Any, X: scipy.sparse.csr_matrix, y: np.ndarray) -> Any:
    """Fit quietly and fast: one BLAS thread (L-BFGS's small vector ops only lose from two)."""
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def sample_trials(
    families: Sequence[str],
    n_iter: int,
    random_state: int,
    Cs: Sequence[float] | None = None,
) -> list[tuple[str, dict]]:
    """The (family, params) random-search trials, deterministic given `random_state`; with
    `Cs`, the linear families try exactly those strengths."""
    trials: list[tuple[str, dict]] = []
    for index, family in enumerate(families):
        if Cs is not None and family in ("l2", "l1"):
            trials += [(family, {"C": float(c)}) for c in Cs]
            continue
        sampler = ParameterSampler(
            SEARCH_SPACES[family], n_iter=n_iter, random_state=random_state + index
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # grid smaller than n_iter: all of it
            for params in sampler:
                clean = {k: float(v) if k == "C" else v for k, v in params.items()}
                trials.append((family, clean))
    return trials
