"""Fitting the title head's model families (training only: scikit-learn, `prodcat[train]`): L2-
and L1-regularised logistic regression and a random forest, their search spaces, how each is built
and fitted, and a fitted linear model as arrays. The arrays a fitted model is saved as and predicts
with are `prodcat.heads.linear_arrays` (no scikit-learn)."""

# ruff: noqa: N803  (scikit-learn's names: X for inputs, C for inverse regularisation)

from __future__ import annotations

import warnings
from collections.abc import Sequence
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

from .linear_arrays import UNSEEN_LOGIT_GAP, LinearArrays

SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "l2": {"C": loguniform(1e-2, 1e3)},
    "l1": {"C": loguniform(1e-1, 1e3)},
    "rf": {
        "n_estimators": [50, 100, 200],
        "max_depth": [None, 25, 50, 100],
        "min_samples_leaf": [1, 2, 3, 5],
    },
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
