"""Title-only head: bag-of-words / TF-IDF with the best of three model families.

Short product titles are nearly keyword lists ("Puma Men's Kuris White Grey Shoe"), so a sparse
linear model on words is strong, cheap and explainable. As in the prototype, L2- and
L1-regularised logistic regression and a random forest are each tuned by random search and the
best on validation accuracy is kept.

Titles are split into words by the one tokeniser (`prodcat.encoders.words`, that of the "bow" /
"tfidf" encoders and of the gate). Everything is saved as JSON + safetensors, no pickle: the
vocabulary, its token pattern (and idf) rebuild the vectoriser; a linear winner is its
coefficient matrix; a forest winner is its trees' node arrays, evaluated by a small numpy
traversal (`ForestArrays`) instead of scikit-learn's pickled objects.
"""

# ruff: noqa: N803  (scikit-learn's names: X for inputs, C/Cs for inverse regularisation)

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import scipy.sparse

from prodcat.encoders.vectorizer import WordVectorizer
from prodcat.encoders.words import (
    DEFAULT_NGRAMS,
    TEXT_HEAD_V1_PATTERN,
    TOKEN_PATTERN,
    VECTORIZER_KINDS,
    make_vectorizer,
)
from prodcat.progress import report_training

if TYPE_CHECKING:  # scikit-learn fits the head; predicting needs none of it (`WordVectorizer`)
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from .base import HOLDOUT_FRACTION, Head, stratified_holdout
from .inputs import Inputs
from .linear_arrays import FAMILIES, MIN_PROBA, ForestArrays, LinearArrays

# `.linear_models` (scikit-learn) is imported where the head fits, never to predict.


def title_vectorizer(
    kind: str,
    min_df: int = 1,
    vocabulary: dict[str, int] | None = None,
    token_pattern: str = TOKEN_PATTERN,
) -> CountVectorizer | TfidfVectorizer:
    """The head's title vectoriser: the registry's "bow" / "tfidf" one (`make_vectorizer`, the
    one tokeniser), in float64 for the linear models' solvers."""
    return make_vectorizer(
        kind, min_df=min_df, vocabulary=vocabulary, token_pattern=token_pattern, dtype=np.float64
    )


class TextLinearHead(Head):
    """Titles only: binary bag-of-words or TF-IDF, then the best of L2-LR, L1-LR and a forest.

    Parameters:
        vectorizer: "bow" (binary unigrams) or "tfidf" (uni+bigrams).
        min_df: keep terms that occur in at least this many training titles. 1 is best on the
            1.5k-title sample (0.949 vs 0.942 mean accuracy over 6 splits: rare brand words
            help); on large catalogues 2 shrinks the vocabulary several-fold (3,648 -> 1,125
            terms on the sample; 185k -> 15k on 30k synthetic titles, where one L2 fit drops
            from 70 s to 5 s), so raise it when fits get slow.
        families: which of "l2", "l1", "rf" the random search compares.
        n_iter: random-search trials per family.
        Cs: the regularisation strengths the linear families try instead of `n_iter` random
            draws (e.g. (20.0,) for one fit; the blended head uses that to train in seconds).
        random_state: seeds the search, the holdout and the forests.
        max_iter: iteration cap of the logistic regressions.
        n_jobs: threads for the random forests (None = 1). Forests are by far the slowest
            family: ~80 s per 100 trees on 30k titles x 100 classes on one core; leave "rf" out
            of `families` for large catalogues if their score does not matter.

    Products without a title are left out of training; at prediction they get the model's
    answer for an empty bag of words (close to the class prior for linear models).
    """

    name: ClassVar[str] = "text-linear"
    modalities: ClassVar[tuple[str, ...]] = ()
    default_text_encoder: ClassVar[str | None] = "tfidf"

    def refit_copy(self) -> Self:
        """The same head with the model family (and C, for a linear one) it chose on
        validation, not a new search."""
        self._check_fitted("refit_copy")
        params: dict[str, Any] = {**self.get_params(), "families": (self.family_,)}
        if "C" in self.best_params_:
            params["Cs"] = (float(self.best_params_["C"]),)
        return type(self)(**params)

    @classmethod
    def for_training(
        cls,
        *,
        seed: int,
        text_encoder: str | None = None,
        image_encoder: str = "effnet-lite0",
        image_size: int | None = None,
        text_families: tuple[str, ...] = (),
    ) -> Self:
        """Its words are the text encoder's kind (bow / tfidf); it searches `text_families`."""
        del image_encoder, image_size
        return cls(
            vectorizer=text_encoder or cls.default_text_encoder or "tfidf",
            families=text_families or FAMILIES,
            random_state=seed,
        )

    def __init__(
        self,
        *,
        vectorizer: str = "tfidf",
        min_df: int = 1,
        families: tuple[str, ...] = FAMILIES,
        n_iter: int = 6,
        Cs: tuple[float, ...] | None = None,
        random_state: int = 0,
        max_iter: int = 1000,
        n_jobs: int | None = None,
    ) -> None:
        self.vectorizer = vectorizer
        self.min_df = min_df
        self.families = families
        self.n_iter = n_iter
        self.Cs = Cs
        self.random_state = random_state
        self.max_iter = max_iter
        self.n_jobs = n_jobs

    # -- fitting ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.vectorizer not in VECTORIZER_KINDS:
            raise ValueError(f"vectorizer={self.vectorizer!r}; expected one of {VECTORIZER_KINDS}")
        families = self.families
        if isinstance(families, str) or not families or set(families) - set(FAMILIES):
            raise ValueError(
                f"families={families!r}; expected a non-empty tuple drawn from {FAMILIES}"
            )
        for name in ("min_df", "n_iter", "max_iter"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; expected a positive int")
        if self.Cs is not None and (
            not self.Cs or any(not isinstance(c, int | float) or c <= 0 for c in self.Cs)
        ):
            raise ValueError(f"Cs={self.Cs!r}; expected None or a tuple of positive numbers")

    def _fit(
        self,
        X: Inputs,
        y: np.ndarray,
        classes: np.ndarray,
        eval_set: tuple[Inputs, np.ndarray] | None,
    ) -> None:
        self._check_params()
        from .linear_models import fit_model  # scikit-learn: training only

        started = time.perf_counter()
        rows = np.flatnonzero(X.has_text)
        if len(np.unique(y[rows].astype(str))) < 2:
            raise ValueError(
                f"only {len(rows)} products have a title and they span fewer than 2 classes; "
                "TextLinearHead learns from titles"
            )
        texts = [X.texts[i] for i in rows]
        labels = y[rows].astype(str)
        (fit_texts, fit_labels), (val_texts, val_labels), selection = self._split(
            texts, labels, eval_set
        )
        vec = self._fit_vectorizer(fit_texts)
        trials, best_model = self._search(
            vec.transform(fit_texts), fit_labels, vec.transform(val_texts), val_labels
        )
        best = max(trials, key=lambda t: t["val_accuracy"])  # first of equals: l2 before l1/rf
        refit = "no: the search models were fitted on all training rows"
        if eval_set is None:
            vec = self._fit_vectorizer(texts)
            best_model = fit_model(
                self._model(best["family"], best["params"]), vec.transform(texts), labels
            )
            refit = f"yes: the winner was refitted on all {len(texts)} training rows with a title"
        self._set_fitted(vec, best_model, best, classes)
        self.validation_report_ = {
            "head": self.name,
            "selection": selection,
            "metric": "accuracy",
            "vectorizer": self.vectorizer,
            "vocabulary_size": self.n_features_in_,
            "n_train": len(fit_labels),
            "n_validation": len(val_labels),
            "trials": trials,
            "best": best,
            "refit": refit,
            "fit_seconds": round(time.perf_counter() - started, 3),
        }

    def _split(
        self, texts: list[str], labels: np.ndarray, eval_set: tuple[Inputs, np.ndarray] | None
    ) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray], str]:
        """(fit part, validation part, how it was chosen): eval_set, else a 10% holdout."""
        if eval_set is not None:
            return (texts, labels), (eval_set[0].texts, eval_set[1].astype(str)), "eval_set"
        train, val = stratified_holdout(labels, HOLDOUT_FRACTION, self.random_state)
        return (
            ([texts[i] for i in train], labels[train]),
            ([texts[i] for i in val], labels[val]),
            f"stratified {HOLDOUT_FRACTION:.0%} holdout of the training rows",
        )

    def _fit_vectorizer(self, texts: list[str]) -> CountVectorizer | TfidfVectorizer:
        vec = title_vectorizer(self.vectorizer, self.min_df)
        try:
            return vec.fit(texts)
        except ValueError as error:  # scikit-learn: "After pruning, no terms remain..."
            raise ValueError(
                f"no word occurs in at least min_df={self.min_df} of the {len(texts)} training "
                f"titles; lower min_df or train on more products ({error})"
            ) from error

    def _model(self, family: str, params: dict[str, Any]) -> Any:
        from .linear_models import make_model

        return make_model(
            family,
            params,
            max_iter=self.max_iter,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )

    def _search(
        self,
        X_fit: scipy.sparse.csr_matrix,
        y_fit: np.ndarray,
        X_val: scipy.sparse.csr_matrix,
        y_val: np.ndarray,
    ) -> tuple[list[dict[str, Any]], Any]:
        """Fit every trial; return their scores and the best fitted model."""
        from .linear_models import fit_model, sample_trials

        trials: list[dict[str, Any]] = []
        best_model, best_score = None, -1.0
        planned = sample_trials(self.families, self.n_iter, self.random_state, self.Cs)
        report_training("title model: fits", 0, len(planned))
        for family, params in planned:
            started = time.perf_counter()
            model = fit_model(self._model(family, params), X_fit, y_fit)
            score = float(np.mean(model.predict(X_val) == y_val))
            trials.append(
                {
                    "family": family,
                    "params": params,
                    "val_accuracy": score,
                    "fit_seconds": round(time.perf_counter() - started, 3),
                }
            )
            if score > best_score:
                best_model, best_score = model, score
            report_training("title model: fits", len(trials), len(planned))
        return trials, best_model

    def _set_fitted(
        self,
        vec: CountVectorizer | TfidfVectorizer,
        model: Any,
        best: dict[str, Any],
        classes: np.ndarray,
    ) -> None:
        from .linear_models import linear_from_sklearn

        columns = np.searchsorted(classes, np.asarray(model.classes_).astype(str))
        self.classes_ = classes
        self.vectorizer_ = WordVectorizer.from_sklearn(vec)
        self.n_features_in_ = len(vec.vocabulary_)
        self.family_ = best["family"]
        self.best_params_ = best["params"]
        if self.family_ == "rf":
            self.model_: LinearArrays | ForestArrays = ForestArrays.from_sklearn(
                model, columns, len(classes)
            )
        else:
            self.model_ = linear_from_sklearn(model, columns, len(classes))

    # -- predicting ------------------------------------------------------------------------
    def _transform(self, X: Inputs) -> scipy.sparse.csr_matrix:
        return self.vectorizer_.transform(X.texts)

    def _logits(self, X: Inputs) -> np.ndarray:
        if isinstance(self.model_, ForestArrays):
            return np.log(np.maximum(self.model_.proba(self._transform(X)), MIN_PROBA))
        return self.model_.logits(self._transform(X))

    def _proba(self, X: Inputs) -> np.ndarray:
        if isinstance(self.model_, ForestArrays):
            return self.model_.proba(self._transform(X))
        return super()._proba(X)

    # -- persistence -----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        vocabulary = list(self.vectorizer_.get_feature_names_out())
        return {
            "family": self.family_,
            "best_params": self.best_params_,
            "n_features_in": self.n_features_in_,
            "vocabulary": vocabulary,
            "token_pattern": self.vectorizer_.token_pattern,
        }

    def _weights(self) -> dict[str, np.ndarray]:
        weights = dict(self.model_.arrays())
        if self.vectorizer_.idf_ is not None:
            weights["idf"] = np.asarray(self.vectorizer_.idf_, dtype=np.float64)
        return weights

    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        # A head saved before the one tokeniser names no pattern: it keeps the one it was fitted
        # with, so that its answers do not change.
        pattern = str(config.get("token_pattern", TEXT_HEAD_V1_PATTERN))
        self.vectorizer_ = WordVectorizer.from_terms(
            self.vectorizer,
            list(config["vocabulary"]),
            idf=weights["idf"] if self.vectorizer == "tfidf" else None,
            ngram_range=DEFAULT_NGRAMS[self.vectorizer],
            token_pattern=pattern,
            dtype=np.float64,
        )
        self.n_features_in_ = int(config["n_features_in"])
        self.family_ = config["family"]
        self.best_params_ = config["best_params"]
        if self.family_ == "rf":
            self.model_ = ForestArrays(
                **{k.removeprefix("forest_"): v for k, v in weights.items() if k != "idf"}
            )
        else:
            self.model_ = LinearArrays(weights["coef"], weights["intercept"])
