"""The one word tokeniser (`prodcat.encoders.words`): the bag-of-words / TF-IDF encoders, the
title head, the hashed bag of words and the gate's unseen-word signal all see the same words, and
heads and gates saved before the pattern was written down keep the one they were fitted with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prodcat.catalogue import Catalogue
from prodcat.encoders.hashing import tokens
from prodcat.encoders.registry import get_encoder
from prodcat.encoders.words import (
    OOD_V1_PATTERN,
    TOKEN_PATTERN,
    make_vectorizer,
    words,
)
from prodcat.gate.ood import OodScorer, unseen_share, vocabulary_of
from prodcat.heads import Inputs, TextLinearHead, load_head
from prodcat.heads.base import CONFIG_FILE


@pytest.fixture(scope="module")
def titles(sample_catalogue: Catalogue) -> list[str]:
    return [p.text for p in sample_catalogue.products]


def test_words_keep_hyphens_single_characters_and_the_s_after_an_apostrophe() -> None:
    assert words("Puma Men's Kuris T-shirt, Pack of 3 (AS177-C3)") == [
        "puma", "men", "s", "kuris", "t-shirt", "pack", "of", "3", "as177-c3",
    ]  # fmt: skip
    assert words("") == [] and words(" -- ") == []


def test_every_reader_of_titles_sees_the_same_words(titles: list[str]) -> None:
    for kind in ("bow", "tfidf"):
        encoder = get_encoder(kind).fit(titles)
        vocabulary = {term for term in encoder.vocabulary if " " not in term}  # tfidf has pairs
        assert vocabulary == vocabulary_of(titles)  # the gate's vocabulary
        analyse = make_vectorizer(kind, ngram_range=(1, 1)).build_analyzer()
        assert all(analyse(t) == words(t) for t in titles)
    head = TextLinearHead(families=("l2",), Cs=(1.0,)).fit(
        Inputs(titles), [str(i % 2) for i in range(len(titles))]
    )
    assert set(head.vectorizer_.vocabulary_) >= vocabulary_of(titles)
    assert all(tokens(t)[: len(words(t))] == words(t) for t in titles)  # hashbow


def test_a_text_head_saved_without_its_pattern_keeps_the_first_one(
    titles: list[str], tmp_path: Path
) -> None:
    inputs, y = Inputs(titles[:600]), [str(i % 3) for i in range(600)]
    head = TextLinearHead(vectorizer="bow", families=("l2",), Cs=(1.0,)).fit(inputs, y)
    head.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["token_pattern"] == TOKEN_PATTERN
    del config["token_pattern"]  # as written before the pattern was saved
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    loaded = load_head(tmp_path)
    assert isinstance(loaded, TextLinearHead)
    assert loaded.vectorizer_.token_pattern == r"(?u)\b\w[\w-]*\b"
    assert np.array_equal(loaded.predict_proba(inputs), head.predict_proba(inputs))


def test_a_gate_saved_without_its_pattern_keeps_the_first_one() -> None:
    titles = ["Blue T-shirt", "Nike Men's Shoe"]
    scorer = OodScorer(image=None, text=None, vocabulary=vocabulary_of(titles))
    assert scorer.vocabulary == {"blue", "t-shirt", "nike", "men", "s", "shoe"}
    saved = json.loads(json.dumps(scorer.config()))
    assert OodScorer.from_saved(saved, {}).token_pattern == TOKEN_PATTERN
    # A gate from before: its vocabulary was built with scikit-learn's default pattern.
    old = {k: v for k, v in saved.items() if k != "token_pattern"}
    old["vocabulary"] = ["blue", "shirt", "nike", "men", "shoe"]
    loaded = OodScorer.from_saved(old, {})
    assert loaded.token_pattern == OOD_V1_PATTERN
    share = unseen_share(["Blue T-shirt", "Red T-shirt"], loaded.vocabulary, loaded.token_pattern)
    assert share.tolist() == [0.0, 0.5]  # "t" is no word there; "shirt" is known
