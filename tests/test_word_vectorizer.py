"""The bow / tfidf encoders' fitted vectoriser without scikit-learn
(`prodcat.encoders.vectorizer.WordVectorizer`): scikit-learn's matrices, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.catalogue import Catalogue
from prodcat.encoders.vectorizer import WordVectorizer
from prodcat.encoders.words import TOKEN_PATTERN, make_vectorizer


@pytest.fixture(scope="module")
def titles(sample_catalogue: Catalogue) -> list[str]:
    return [p.text for p in sample_catalogue.products]


# Titles that stress the analyser: repeats, word pairs seen twice, no known word, hyphens,
# apostrophes, digits, upper case, non-ASCII letters, an empty one.
HARD_TITLES = [
    "Puma Men's Kuris T-shirt, Pack of 3 (AS177-C3)",
    "shirt shirt SHIRT men men shirt",
    "zzqx unknown-words-only 0000",
    "",
    "Ærø Café crème — Damen Schuhe",
    "a",
]


@pytest.mark.parametrize("kind", ["bow", "tfidf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ngrams", [None, (1, 1), (2, 3)])
def test_the_word_vectorizer_gives_scikit_learns_matrix(
    titles: list[str], kind: str, dtype: type, ngrams: tuple[int, int] | None
) -> None:
    fitted = make_vectorizer(kind, ngram_range=ngrams, dtype=dtype).fit(titles[:1000])
    ours = WordVectorizer.from_sklearn(fitted)
    new = titles[1000:] + HARD_TITLES
    expected, got = fitted.transform(new).tocsr(), ours.transform(new)
    assert got.dtype == expected.dtype == dtype and got.shape == expected.shape
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.data, expected.data)  # the same arithmetic: equal, not just close
    assert got.nnz > len(new)  # the comparison is about something
    assert list(ours.get_feature_names_out()) == list(fitted.get_feature_names_out())
    assert ours.transform([]).shape == (0, len(fitted.vocabulary_))


def test_the_word_vectorizer_refuses_what_it_cannot_hold() -> None:
    vocabulary = {"shirt": 0, "men": 1}
    with pytest.raises(ValueError, match="idf has 1 values for a vocabulary of 2 terms"):
        WordVectorizer("tfidf", vocabulary, idf=np.ones(1), token_pattern=TOKEN_PATTERN)
    with pytest.raises(ValueError, match="'bow' vectoriser takes no idf"):
        WordVectorizer("bow", vocabulary, idf=np.ones(2), token_pattern=TOKEN_PATTERN)
    vec = WordVectorizer("bow", vocabulary, token_pattern=TOKEN_PATTERN)
    with pytest.raises(ValueError, match="expected a list of titles, got one string"):
        vec.transform("men shirt")
    with pytest.raises(TypeError, match="title 1 is NoneType; expected a str"):
        vec.transform(["men", None])  # type: ignore[list-item]
    assert vec.transform(["Men's SHIRT shirt"]).toarray().tolist() == [[1.0, 1.0]]
    for damaged in ([], ["men", "shirt", "men"]):
        with pytest.raises(ValueError, match="vocabulary is empty or repeats a term"):
            WordVectorizer.from_terms("bow", damaged, token_pattern=TOKEN_PATTERN)
