"""Hashed bag of words and word pairs: the lexical signal of a title as a dense vector.

Sentence embeddings (MiniLM) blur the one word that names the class ("... Kurta", "... Flip
Flops"); a bag of words keeps it, which is why TF-IDF alone scores so well on titles. Hashing gives
that signal to the fusion head without a fitted vocabulary: nothing to fit, nothing to ship, the
same vector for a title on every machine, and new words cost no retraining of the encoder.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from .base import TextEncoder
from .words import words

# 2: words from `prodcat.encoders.words` ("men's" gives "men" + "s"; revision 1 dropped the "s").
REVISION = 2


def tokens(text: str) -> list[str]:
    """Lower-cased words (`prodcat.encoders.words`) and adjacent word pairs of a title."""
    single = words(text)
    return single + [f"{a} {b}" for a, b in pairwise(single)]


class HashedWordsEncoder(TextEncoder):
    """Binary hashed bag of words + word pairs, L2-normalised, `dim` buckets (crc32 hashing)."""

    name = "hashbow"
    # Recomputing is faster than reading the cache (tens of thousands of titles per second), and
    # caching would store `dim` floats per title.
    cacheable = False

    def __init__(self, *, dim: int = 4096, batch_size: int = 4096) -> None:
        if dim < 16:
            raise ValueError(f"dim={dim}; expected at least 16 hash buckets")
        self._dim = dim
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> str:
        return f"hashbow/{self._dim}/crc32/words+pairs/binary-l2/v{REVISION}"

    def encode(self, items: Sequence[str]) -> np.ndarray:
        texts = self.check_texts(items)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            buckets = {zlib.crc32(t.encode()) % self._dim for t in tokens(text)}
            if buckets:
                out[row, list(buckets)] = 1.0 / np.sqrt(len(buckets))
        return out
