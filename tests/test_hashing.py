"""The hashed bag-of-words encoder and composite text inputs ('minilm+hashbow')."""

from __future__ import annotations

import numpy as np

from prodcat.catalogue import Catalogue
from prodcat.encoders.hashing import tokens
from prodcat.encoders.registry import get_encoder
from prodcat.features.cache import FeatureCache
from prodcat.features.encode import Features, encode_products


def test_tokens_are_words_and_pairs() -> None:
    assert tokens("Nike Men Black T-shirt") == [
        "nike", "men", "black", "t-shirt", "nike men", "men black", "black t-shirt",
    ]  # fmt: skip


def test_vectors_are_binary_l2_normalised_and_stable() -> None:
    encoder = get_encoder("hashbow")
    a, b, empty = encoder.encode(["Puma Men Black Shoe", "Puma Men Black Shoe", ""])
    assert np.array_equal(a, b)
    assert np.isclose(np.linalg.norm(a), 1.0)
    assert np.count_nonzero(a) == 7  # 4 words + 3 pairs (no collisions in 4096 buckets here)
    assert not empty.any()
    # Shared words give a similarity that a sentence embedding might blur but never drop to 0.
    c = encoder.encode(["Adidas Women White Shoe"])[0]
    assert 0 < float(a @ c) < 0.5


def test_hashbow_bypasses_the_cache_and_concatenates(
    sample_catalogue: Catalogue, tmp_path: object
) -> None:
    products = sample_catalogue.products[:30]
    cache = FeatureCache(str(tmp_path))
    hashed = encode_products(products, get_encoder("hashbow"), cache, progress=False)
    assert hashed.n_computed == len({p.text for p in products}) and hashed.n_cached == 0
    assert not any(cache.root.glob("*/pack-*"))  # nothing written for a non-cacheable encoder
    twice = Features.concatenate([hashed, hashed])
    assert twice.vectors.shape == (len(hashed.ids), 2 * 4096)
    assert np.array_equal(twice.vectors[:, 4096:], hashed.vectors)


def test_a_second_pass_reads_everything_from_the_cache(
    sample_catalogue: Catalogue, tmp_path: object
) -> None:
    """Regression: an empty store is falsy (it has __len__), which once disabled every write."""
    products = sample_catalogue.products[:12]
    cache = FeatureCache(str(tmp_path))
    encoder = get_encoder("minilm")
    first = encode_products(products, encoder, cache, progress=False)
    second = encode_products(products, encoder, FeatureCache(str(tmp_path)), progress=False)
    assert first.n_computed == len({p.text for p in products}) and first.n_cached == 0
    assert second.n_computed == 0 and second.n_cached == first.n_computed
    assert np.array_equal(first.vectors, second.vectors)
