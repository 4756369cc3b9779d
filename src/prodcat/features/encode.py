"""Turn catalogue products into feature matrices, through the feature cache.

Each distinct photo (by content) and each distinct text is encoded once, ever, per encoder version:
duplicates inside a catalogue share one computation, and a second run (or another catalogue with
the same photos) reads the cache. Decoding runs in worker threads while ONNX Runtime encodes the
previous batch, so JPEG decoding overlaps with the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prodcat.catalogue import Product
from prodcat.catalogue.images import ImageError, load_image, photo_longer_side
from prodcat.encoders.base import Encoder, ImageEncoder
from prodcat.features.cache import FeatureCache, FeatureStore, content_key
from prodcat.progress import progress_bar

# New vectors are written to the cache in packs of this many: an interrupted run keeps all but the
# last unfinished pack, and packs stay few.
FLUSH_EVERY = 1024
PREFETCH = 2


@dataclass
class Features:
    """Vectors for the products that have this modality, row-aligned with `ids`."""

    encoder: str
    version: str
    ids: list[str]
    vectors: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)  # product id -> why it has no vector
    n_computed: int = 0  # distinct photos/texts encoded in this run
    n_cached: int = 0  # distinct photos/texts read from the cache

    @classmethod
    def concatenate(cls, parts: Sequence[Features]) -> Features:
        """Several encoders' vectors side by side, for the products all of them have."""
        others = [set(p.ids) for p in parts[1:]]
        ids = [pid for pid in parts[0].ids if all(pid in o for o in others)]
        columns = [p.lookup(ids)[1] for p in parts]
        return cls(
            encoder="+".join(p.encoder for p in parts),
            version="+".join(p.version for p in parts),
            ids=ids,
            vectors=np.hstack(columns) if ids else np.zeros((0, sum(c.shape[1] for c in columns))),
            errors={k: v for p in parts for k, v in p.errors.items()},
            n_computed=sum(p.n_computed for p in parts),
            n_cached=sum(p.n_cached for p in parts),
        )

    def lookup(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mask of ids that have a vector, their vectors): aligns features to any product order."""
        position = {pid: i for i, pid in enumerate(self.ids)}
        rows = [position.get(pid, -1) for pid in ids]
        mask = np.array([r >= 0 for r in rows], dtype=bool)
        return mask, self.vectors[[r for r in rows if r >= 0]]


def encode_products(
    products: Sequence[Product],
    encoder: Encoder,
    cache: FeatureCache,
    *,
    progress: bool = True,
) -> Features:
    """Encode the photos (image encoders) or texts (text encoders) of `products`."""
    if isinstance(encoder, ImageEncoder):
        keys = {p.id: p.image_sha256 for p in products if p.image is not None and p.image_sha256}
        sources = {p.image_sha256: p.image for p in products if p.image and p.image_sha256}
        if encoder.fit_side is not None:
            keys, sources = fitted_keys(keys, sources, encoder.fit_side)
        batches = _image_batches(encoder, sources)
    else:
        keys = {p.id: content_key(p.text) for p in products if p.text}
        texts = {content_key(p.text): p.text for p in products if p.text}
        batches = _text_batches(encoder, texts)
    store = cache.store(encoder.version) if encoder.cacheable else None
    distinct = list(dict.fromkeys(keys.values()))
    vectors, failed, n_cached = _fill(store, distinct, batches, encoder, progress)
    ids = [pid for pid, key in keys.items() if key in vectors]
    matrix = (
        np.stack([vectors[keys[pid]] for pid in ids])
        if ids
        else np.zeros((0, encoder.dim), dtype=np.float32)
    )
    errors = {pid: failed[key] for pid, key in keys.items() if key in failed}
    n_computed = len(distinct) - n_cached - len(failed)
    return Features(encoder.name, encoder.version, ids, matrix, errors, n_computed, n_cached)


def fitted_keys(
    keys: dict[str, str], sources: dict[str, Path], side: int
) -> tuple[dict[str, str], dict[str, Path]]:
    """Cache keys for an encoder that brings photos larger than `side` px down to it: a photo the
    fit leaves alone keeps its content key (its features are the same with or without the fit),
    a larger one gets a key of its own, so the two kinds of features never share an entry."""
    renamed = {}
    for key, path in sources.items():
        if photo_longer_side(path) > side:
            renamed[key] = content_key(f"{key}@fit{side}")
    new_keys = {pid: renamed.get(key, key) for pid, key in keys.items()}
    new_sources = {renamed.get(key, key): path for key, path in sources.items()}
    return new_keys, new_sources


# A batcher turns keys into a stream of (keys that worked, their vectors, {key: error}).
Batcher = Callable[[list[str]], Iterator[tuple[list[str], np.ndarray, dict[str, str]]]]


def _fill(
    store: FeatureStore | None,
    keys: list[str],
    batches: Batcher,
    encoder: Encoder,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Vectors for `keys` from the store, computing and storing the missing ones."""
    found, cached = (
        store.get(keys) if store is not None else (np.zeros(len(keys), bool), np.zeros((0, 0)))
    )
    vectors = dict(zip([k for k, f in zip(keys, found, strict=True) if f], cached, strict=True))
    missing = [k for k, f in zip(keys, found, strict=True) if not f]
    failed: dict[str, str] = {}
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    label = f"encoding with {encoder.name} ({len(keys) - len(missing):,} cached)"
    with progress_bar(label, total=len(missing), enabled=progress and bool(missing)) as advance:
        for done_keys, batch, errors in batches(missing):
            vectors.update(zip(done_keys, batch, strict=True))
            failed.update(errors)
            pending_keys += done_keys
            pending.append(batch)
            if store is not None and len(pending_keys) >= FLUSH_EVERY:
                store.put(pending_keys, np.concatenate(pending))
                pending_keys, pending = [], []
            advance(len(done_keys) + len(errors))
    if store is not None and pending_keys:
        store.put(pending_keys, np.concatenate(pending))
    return vectors, failed, len(keys) - len(missing)


def _chunks(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def _image_batches(encoder: ImageEncoder, sources: dict[str, Path]) -> Batcher:
    def decode(keys: list[str]) -> tuple[list[str], list[np.ndarray], dict[str, str]]:
        ok, arrays, errors = [], [], {}
        for key in keys:
            try:
                img = load_image(sources[key], draft_size=encoder.draft_size)
            except ImageError as exc:
                errors[key] = str(exc)
                continue
            ok.append(key)
            arrays.append(encoder.preprocess(img))
        return ok, arrays, errors

    def batches(keys: list[str]) -> Iterator[tuple[list[str], np.ndarray, dict[str, str]]]:
        # Two worker threads decode the next batches (Pillow releases the GIL) while ONNX Runtime
        # (which releases it too) encodes the current one; at most PREFETCH batches wait in memory.
        chunks = _chunks(keys, encoder.batch_size)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(decode, c) for c in chunks[:PREFETCH]]
            for i in range(len(chunks)):
                ok, arrays, errors = futures[i].result()
                if i + PREFETCH < len(chunks):
                    futures.append(pool.submit(decode, chunks[i + PREFETCH]))
                vectors = (
                    encoder.encode_arrays(np.stack(arrays))
                    if arrays
                    else np.zeros((0, encoder.dim), dtype=np.float32)
                )
                yield ok, vectors, errors

    return batches


def _text_batches(encoder: Encoder, texts: dict[str, str]) -> Batcher:
    def batches(keys: list[str]) -> Iterator[tuple[list[str], np.ndarray, dict[str, str]]]:
        for chunk in _chunks(keys, encoder.batch_size):
            yield chunk, np.asarray(encoder.encode([texts[k] for k in chunk]), np.float32), {}

    return batches
