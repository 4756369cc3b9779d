"""The one word tokeniser: what a "word" of a title is, for every part of prodcat that counts words.

The bag-of-words and TF-IDF encoders, the title head (`prodcat.heads.TextLinearHead`), the hashed
bag of words ("hashbow") and the gate's unseen-word signal all split titles with `TOKEN_PATTERN`,
either through `words` or through a scikit-learn vectoriser made by `make_vectorizer` (which
lower-cases and applies the same pattern, so its analyser gives the same words).

Fitted vocabularies are saved with their pattern. Heads and gates saved before that name none; they
keep the pattern they were fitted with (`TEXT_HEAD_V1_PATTERN`, `OOD_V1_PATTERN`) so that their
answers do not change. Nothing new is fitted with those.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse
    from sklearn.feature_extraction.text import CountVectorizer

# Words are runs of letters/digits, hyphens allowed inside, so "t-shirt", "ray-ban" and "as177-c3"
# stay whole, and single characters count ("w" is a brand, "3" in "pack of 3", the "s" of
# "men's"). Dropping the letter after an apostrophe ("men's" -> "men" only: the bag-of-words
# encoders' pattern until the tokenisers were merged) cost the title head test accuracy on the
# bundled sample, mean of 4 splits: 0.945 vs 0.952 with the full search, 0.946 vs 0.949 with L2.
TOKEN_PATTERN = r"(?u)\b\w[\w-]*\b"
# Read-only: the patterns of files saved before the pattern was written down with them. Title
# heads already used TOKEN_PATTERN (spelt out here so that it stays if that one ever changes); the
# gate's unseen-word signal used scikit-learn's default (two characters or more, split at hyphens).
TEXT_HEAD_V1_PATTERN = r"(?u)\b\w[\w-]*\b"
OOD_V1_PATTERN = r"(?u)\b\w\w+\b"

# What each vectoriser kind counts: binary words ("bow") or TF-IDF of words and word pairs.
VECTORIZER_KINDS = ("bow", "tfidf")
DEFAULT_NGRAMS = {"bow": (1, 1), "tfidf": (1, 2)}


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def words(text: str, pattern: str = TOKEN_PATTERN) -> list[str]:
    """The lower-cased words of `text`, in order (repeats kept)."""
    return _compiled(pattern).findall(text.lower())


def make_vectorizer(
    kind: str,
    *,
    ngram_range: tuple[int, int] | None = None,
    min_df: float = 1,
    vocabulary: dict[str, int] | list[str] | None = None,
    token_pattern: str = TOKEN_PATTERN,
    lowercase: bool = True,
    dtype: type = np.float32,
) -> CountVectorizer:
    """An unfitted scikit-learn vectoriser over `words`: binary counts ("bow") or TF-IDF ("tfidf",
    scikit-learn's defaults: smooth idf, L2-normalised rows).

    `ngram_range` defaults to words for "bow" and words + word pairs for "tfidf". `min_df` drops
    terms seen in fewer titles (a count, or a share when a float); it is ignored when a saved
    `vocabulary` is given.
    """
    if kind not in VECTORIZER_KINDS:
        raise ValueError(
            f"vectorizer kind {kind!r} is not known; expected one of {VECTORIZER_KINDS}"
        )
    # scikit-learn is imported here: it takes over a second, which the MiniLM prediction path
    # (and a server's start) should not pay.
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    common: dict[str, Any] = {
        "lowercase": lowercase,
        "token_pattern": token_pattern,
        "ngram_range": DEFAULT_NGRAMS[kind] if ngram_range is None else tuple(ngram_range),
        "min_df": 1 if vocabulary is not None else min_df,
        "vocabulary": vocabulary,
        "dtype": dtype,
    }
    if kind == "bow":
        return CountVectorizer(binary=True, **common)
    return TfidfVectorizer(**common)


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (explain's cache of terms)
class TermCounter:
    """A fitted vectoriser's prediction half, without scikit-learn: titles -> term rows.

    The same rows as the fitted "bow" / "tfidf" vectoriser it was made from (`from_vectorizer`;
    tests/test_words.py compares them): scikit-learn's `transform` spends about a millisecond per
    call validating its input, more than the words model itself on one product, and the base
    install predicts without scikit-learn.
    """

    vocabulary: dict[str, int]
    token_pattern: str = TOKEN_PATTERN
    ngram_range: tuple[int, int] = (1, 1)
    idf: np.ndarray | None = None  # None: binary counts ("bow"); else TF-IDF, rows L2-normalised

    @classmethod
    def from_vectorizer(cls, vectorizer: Any) -> TermCounter:
        idf = getattr(vectorizer, "idf_", None)
        return cls(
            vocabulary=dict(vectorizer.vocabulary_),
            token_pattern=vectorizer.token_pattern,
            ngram_range=tuple(vectorizer.ngram_range),
            idf=None if idf is None else np.asarray(idf, dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.vocabulary)

    def terms(self, text: str) -> list[str]:
        """The title's words and word n-grams, in scikit-learn's order (words first)."""
        tokens = words(text, self.token_pattern)
        low, high = self.ngram_range
        out = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return out

    def transform(self, texts: Sequence[str]) -> scipy.sparse.csr_matrix:
        """(len(texts), len(vocabulary)) float64 rows, like the vectoriser's `transform`."""
        import scipy.sparse

        indptr, indices, data = [0], [], []
        for text in texts:
            counts = Counter(j for j in map(self.vocabulary.get, self.terms(text)) if j is not None)
            columns = sorted(counts)
            values = np.array([counts[j] for j in columns], dtype=np.float64)
            if self.idf is None:
                values = np.ones(len(columns))
            else:
                values *= self.idf[columns]
                norm = np.sqrt(values @ values)
                values = values / norm if norm > 0 else values
            indices.extend(columns)
            data.append(values)
            indptr.append(len(indices))
        flat = np.concatenate(data) if data else np.zeros(0)
        shape = (len(texts), len(self.vocabulary))
        return scipy.sparse.csr_matrix((flat, np.asarray(indices, np.int32), indptr), shape=shape)

    def feature_names(self) -> np.ndarray:
        """The terms by column."""
        names = np.empty(len(self.vocabulary), dtype=object)
        for term, column in self.vocabulary.items():
            names[column] = term
        return names
