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
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
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
