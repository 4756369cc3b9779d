"""A content-addressed, interruption-safe on-disk feature store.

Layout: `<root>/<slug of the encoder version>/pack-<uuid>.safetensors`, each pack holding `keys`
(N x 32 bytes: SHA-256 of the image bytes or of the UTF-8 text) and `vectors` (N x dim float32).

Why packs instead of one file per vector: a warm catalogue of 37k products loads in a handful of
sequential reads (tens of thousands of products per second) instead of 37k file opens. Why it is
safe under interruption: a pack is written to a temporary name in the same folder, flushed to disk
and renamed into place, and readers only look at `pack-*.safetensors`; a run killed mid-write leaves
at most a `.tmp-*` file that is ignored and swept later. Identical keys always carry identical
vectors (same encoder version, same content), so duplicates across packs are harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from prodcat.paths import default_cache_dir

KEY_BYTES = 32
PACK_GLOB = "pack-*.safetensors"
STALE_TMP_SECONDS = 3600
# Above this many packs the store merges them into one when it is opened.
COMPACT_AT = 64


def content_key(data: bytes | str) -> str:
    """The cache key of an image (its bytes) or a text (its UTF-8 form): a SHA-256 hex digest."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def _slug(version: str) -> str:
    """A folder name for an encoder version: readable prefix + hash (versions contain '/')."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", version)[:60]
    return f"{readable}-{hashlib.sha256(version.encode()).hexdigest()[:16]}"


class FeatureStore:
    """The cached vectors of one encoder version."""

    def __init__(self, folder: Path, version: str) -> None:
        self.folder = folder
        self.version = version
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "version.txt"
        if not marker.exists():
            _atomic_write_bytes(marker, version.encode())
        self._index: dict[bytes, np.ndarray] | None = None
        self.dim: int | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is not None:
            return self._index
        self._sweep_tmp()
        packs = sorted(self.folder.glob(PACK_GLOB))
        if len(packs) > COMPACT_AT:
            packs = self._compact(packs)
        index: dict[bytes, np.ndarray] = {}
        for pack in packs:
            try:
                tensors = load_file(pack)
            except (SafetensorError, OSError, ValueError):
                # Only reachable through outside damage (a rename is atomic); the entries are
                # recomputed on the next run, so skipping is safe.
                continue
            keys, vectors = tensors["keys"], tensors["vectors"]
            self.dim = int(vectors.shape[1])
            index.update(zip(map(bytes, keys), vectors, strict=True))
        self._index = index
        return index

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, key: str) -> bool:
        return bytes.fromhex(key) in self._load()

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (found mask, vectors of the found keys in order)."""
        index = self._load()
        hits = [index.get(bytes.fromhex(k)) for k in keys]
        found = np.array([h is not None for h in hits], dtype=bool)
        rows = [h for h in hits if h is not None]
        if not rows:
            return found, np.zeros((0, self.dim or 0), dtype=np.float32)
        return found, np.stack(rows)

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors as one new pack, atomically."""
        if len(keys) != len(vectors):
            raise ValueError(f"got {len(keys)} keys but {len(vectors)} vectors; expected one each")
        if len(keys) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        key_array = np.frombuffer(b"".join(bytes.fromhex(k) for k in keys), dtype=np.uint8)
        self._write_pack(key_array.reshape(-1, KEY_BYTES), vectors)
        index = self._load()
        index.update(zip(map(bytes, key_array.reshape(-1, KEY_BYTES)), vectors, strict=True))
        self.dim = int(vectors.shape[1])

    def _write_pack(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        final = self.folder / f"pack-{uuid.uuid4().hex}.safetensors"
        tmp = self.folder / f".tmp-{final.name}"
        save_file({"keys": keys, "vectors": vectors}, tmp)
        _fsync_and_replace(tmp, final)
        return final

    def _compact(self, packs: list[Path]) -> list[Path]:
        """Merge `packs` into one and return the packs there are now. Another process may be
        compacting the same folder: a pack it already merged and removed is skipped here, a pack
        is removed only once its vectors are in a new pack on disk, and the packs written
        meanwhile (its merged one included) are returned too, so nothing is lost or recomputed."""
        merged, done = [], []
        for pack in packs:
            try:
                merged.append(load_file(pack))
            except (SafetensorError, OSError, ValueError):  # gone (merged elsewhere) or damaged
                continue
            done.append(pack)
        if merged:
            keys = np.concatenate([m["keys"] for m in merged])
            vectors = np.concatenate([m["vectors"] for m in merged])
            _, first = np.unique(keys, axis=0, return_index=True)
            self._write_pack(keys[np.sort(first)], vectors[np.sort(first)])
            for old in done:
                old.unlink(missing_ok=True)
        return sorted(self.folder.glob(PACK_GLOB))

    def _sweep_tmp(self) -> None:
        """Remove temporary files of runs that died long ago (recent ones may still be writing)."""
        now = time.time()
        for tmp in self.folder.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()


class FeatureCache:
    """The root of the feature stores; one store per encoder version, shared across catalogues."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "features"
        self._stores: dict[str, FeatureStore] = {}

    def store(self, version: str) -> FeatureStore:
        if version not in self._stores:
            self._stores[version] = FeatureStore(self.root / _slug(version), version)
        return self._stores[version]


def _fsync_and_replace(tmp: Path, final: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(final)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_bytes(data)
    _fsync_and_replace(tmp, path)
