"""The "bow" / "tfidf" encoders' fitted vectoriser in NumPy and SciPy, instead of scikit-learn's.

Fitting a vocabulary (and its idf) stays with scikit-learn's CountVectorizer / TfidfVectorizer
(`prodcat.encoders.words.make_vectorizer`, training only: `pip install "prodcat[train]"`). What a
fitted one does to new titles is small: split them into words with the token pattern, make the word
n-grams, count the known ones, then binary counts or tf x idf with L2-normalised rows. That is done
here, so the base install encodes titles with a fitted "bow" / "tfidf" encoder without scikit-learn
(51 MB, and over a second of imports at a server's start). `WordVectorizer.transform` gives the
same matrix as scikit-learn's `transform`, bit for bit in float32 too (tests/test_words.py compares
them): the same arithmetic in the same dtypes, the row norms summed in the same order, so features
in the cache stay those of the same encoder version. The title head's words model predicts with it
too (float64), and skips scikit-learn's input checks, which cost about a millisecond per call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse

from .words import VECTORIZER_KINDS


class WordVectorizer:
    """A fitted "bow" (binary counts) or "tfidf" (tf x idf, L2 rows) vectoriser over a fixed
    vocabulary; the attributes a fitted scikit-learn one has that prodcat reads (`vocabulary_`,
    `idf_`, `token_pattern`, `get_feature_names_out`)."""

    def __init__(
        self,
        kind: str,
        vocabulary: dict[str, int],
        *,
        idf: np.ndarray | None = None,
        ngram_range: tuple[int, int] = (1, 1),
        token_pattern: str,
        lowercase: bool = True,
        dtype: type = np.float32,
    ) -> None:
        if kind not in VECTORIZER_KINDS:
            raise ValueError(f"vectorizer kind {kind!r} is not known; expected {VECTORIZER_KINDS}")
        if (kind == "tfidf") != (idf is not None):
            raise ValueError(f"a {kind!r} vectoriser takes {'an' if kind == 'tfidf' else 'no'} idf")
        if idf is not None and len(idf) != len(vocabulary):
            raise ValueError(
                f"idf has {len(idf)} values for a vocabulary of {len(vocabulary)} terms; "
                "expected one per term"
            )
        self.kind = kind
        self.vocabulary_ = vocabulary
        self.idf_ = idf
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.token_pattern = token_pattern
        self.lowercase = lowercase
        self.dtype = dtype
        self._pattern = re.compile(token_pattern)
        self._names: np.ndarray | None = None

    @classmethod
    def from_terms(cls, kind: str, terms: Sequence[str], **options: Any) -> WordVectorizer:
        """From a saved vocabulary, its terms in column order; refused when it is empty or
        repeats a term (a damaged file), as scikit-learn refuses it."""
        if not terms or len(set(terms)) != len(terms):
            raise ValueError(
                f"the saved {kind} vocabulary is empty or repeats a term ({len(terms)} terms, "
                f"{len(set(terms))} distinct); it is damaged"
            )
        return cls(kind, {term: column for column, term in enumerate(terms)}, **options)

    @classmethod
    def from_sklearn(cls, fitted: Any) -> WordVectorizer:
        """The same vectoriser as a fitted scikit-learn CountVectorizer (binary) or
        TfidfVectorizer made by `make_vectorizer`."""
        idf = getattr(fitted, "idf_", None)
        if idf is None and not fitted.binary:
            raise ValueError("a bag of words from make_vectorizer is binary; this one counts")
        return cls(
            "tfidf" if idf is not None else "bow",
            dict(fitted.vocabulary_),
            idf=idf,
            ngram_range=fitted.ngram_range,
            token_pattern=fitted.token_pattern,
            lowercase=fitted.lowercase,
            dtype=fitted.dtype,
        )

    def get_feature_names_out(self) -> np.ndarray:
        """The terms by column (an object array, as scikit-learn gives)."""
        if self._names is None:
            names = np.empty(len(self.vocabulary_), dtype=object)
            for term, column in self.vocabulary_.items():
                names[column] = term
            self._names = names
        return self._names

    def terms(self, text: str) -> list[str]:
        """The words and word n-grams of `text` that a vocabulary may hold (repeats kept)."""
        tokens = self._pattern.findall(text.lower() if self.lowercase else text)
        low, high = self.ngram_range
        grams = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return grams

    def transform(self, texts: Sequence[str]) -> scipy.sparse.csr_matrix:
        """(len(texts), len(vocabulary)) CSR of `dtype`; a row is empty when no term is known."""
        if isinstance(texts, str):
            raise ValueError("expected a list of titles, got one string")
        X = self._counts(texts)  # noqa: N806  (a matrix)
        if self.idf_ is None:
            X.data.fill(1)
            return X
        X.data *= self.idf_[X.indices]
        _normalise_rows(X)
        return X

    def _counts(self, texts: Sequence[str]) -> scipy.sparse.csr_matrix:
        columns: list[int] = []
        counts: list[int] = []
        indptr = [0]
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"title {row} is {type(text).__name__}; expected a str")
            found: dict[int, int] = {}
            for term in self.terms(text):
                column = self.vocabulary_.get(term)
                if column is not None:
                    found[column] = found.get(column, 0) + 1
            columns += found
            counts += found.values()
            indptr.append(len(columns))
        X = scipy.sparse.csr_matrix(  # noqa: N806
            (
                np.asarray(counts, dtype=np.intc),
                np.asarray(columns, dtype=np.int32),
                np.asarray(indptr, dtype=np.int32),
            ),
            shape=(len(indptr) - 1, len(self.vocabulary_)),
            dtype=self.dtype,
        )
        X.sort_indices()
        return X


def _normalise_rows(X: scipy.sparse.csr_matrix) -> None:  # noqa: N803
    """Divide each row by its L2 norm in place (empty rows stay empty), as scikit-learn does:
    squares in the data's dtype, summed in float64 term by term, the quotient cast back."""
    lengths = np.diff(X.indptr)
    if not len(X.data):
        return
    squares = (X.data * X.data).astype(np.float64)
    sums = np.zeros(X.shape[0])
    for k in range(int(lengths.max())):  # k-th term of every row that has one: sequential sums
        rows = np.flatnonzero(lengths > k)
        sums[rows] += squares[X.indptr[rows] + k]
    norms = np.sqrt(np.repeat(sums, lengths))
    X.data[:] = (X.data.astype(np.float64) / np.where(norms == 0.0, 1.0, norms)).astype(X.dtype)
