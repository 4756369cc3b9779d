"""The feature cache: round trip, persistence, versions kept apart, interruption safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prodcat.features import cache as cache_module
from prodcat.features.cache import FeatureCache, content_key


def _keys(n: int, salt: str = "") -> list[str]:
    return [content_key(f"{salt}title {i}") for i in range(n)]


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    keys, vectors = _keys(50), rng.normal(size=(50, 16)).astype(np.float32)
    FeatureCache(tmp_path).store("enc/v1").put(keys, vectors)

    store = FeatureCache(tmp_path).store("enc/v1")  # a new process would see the same
    query = [keys[3], content_key("never stored"), keys[0]]
    found, got = store.get(query)
    assert found.tolist() == [True, False, True]
    assert np.array_equal(got, vectors[[3, 0]])
    assert len(store) == 50


def test_versions_are_kept_apart(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    keys = _keys(3)
    cache.store("enc/v1").put(keys, np.ones((3, 4), np.float32))
    found, _ = FeatureCache(tmp_path).store("enc/v2").get(keys)
    assert not found.any()


def test_content_key_is_sha256() -> None:
    assert content_key("abc") == content_key(b"abc")
    assert content_key("abc").startswith("ba7816bf")


def test_mismatched_lengths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="got 2 keys but 3 vectors"):
        FeatureCache(tmp_path).store("v").put(_keys(2), np.zeros((3, 4), np.float32))


def test_failed_write_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureCache(tmp_path).store("enc/v1")
    store.put(_keys(5), np.zeros((5, 4), np.float32))

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the user pressed Ctrl-C between writing and renaming

    monkeypatch.setattr(cache_module.Path, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(_keys(5, "b"), np.ones((5, 4), np.float32))
    monkeypatch.undo()

    reopened = FeatureCache(tmp_path).store("enc/v1")
    assert len(reopened) == 5  # the first pack only; the half-written one is invisible
    assert list(reopened.folder.glob(".tmp-pack-*"))  # left behind, ignored, swept when stale


def test_stale_temporary_files_are_swept(tmp_path: Path) -> None:
    store = FeatureCache(tmp_path).store("enc/v1")
    stale = store.folder / ".tmp-pack-dead.safetensors"
    stale.write_bytes(b"half a pack")
    old = time.time() - 2 * cache_module.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    assert len(FeatureCache(tmp_path).store("enc/v1")) == 0
    assert not stale.exists()


KILLED_WRITER = """
import sys, numpy as np
from prodcat.features.cache import FeatureCache, content_key
store = FeatureCache(sys.argv[1]).store("enc/v1")
i = 0
while True:  # write packs until killed
    keys = [content_key(f"{i}-{j}") for j in range(200)]
    store.put(keys, np.full((200, 64), i, dtype=np.float32))
    i += 1
"""


def test_kill_9_mid_run_leaves_only_complete_entries(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(tmp_path.glob("*/pack-*"))) < 5:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = FeatureCache(tmp_path).store("enc/v1")
    n = len(store)
    assert n >= 5 * 200 and n % 200 == 0  # whole packs only
    # Every entry reads back as written: pack i holds the value i for all its keys.
    for i in range(n // 200):
        found, got = store.get([content_key(f"{i}-{j}") for j in range(200)])
        assert found.all()
        assert (got == i).all()


def test_many_packs_are_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "COMPACT_AT", 4)
    store = FeatureCache(tmp_path).store("enc/v1")
    for i in range(6):
        store.put(_keys(10, str(i)), np.full((10, 3), i, np.float32))
    store.put(_keys(10, "0"), np.zeros((10, 3), np.float32))  # duplicates of pack 0
    reopened = FeatureCache(tmp_path).store("enc/v1")
    assert len(reopened) == 60
    assert len(list(reopened.folder.glob("pack-*"))) == 1
    found, got = reopened.get(_keys(10, "5"))
    assert found.all() and (got == 5).all()


def test_two_processes_compacting_at_once_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second store listed the packs before the first merged and removed them: it skips the
    vanished packs instead of failing, and still sees every vector (the first one's merged pack
    included)."""
    monkeypatch.setattr(cache_module, "COMPACT_AT", 4)
    writer = FeatureCache(tmp_path).store("enc/v1")
    for i in range(6):
        writer.put(_keys(10, str(i)), np.full((10, 3), i, np.float32))
    listed = sorted(writer.folder.glob("pack-*.safetensors"))
    first, second = (FeatureCache(tmp_path).store("enc/v1") for _ in range(2))
    assert len(first) == 60 and len(list(first.folder.glob("pack-*"))) == 1
    now = second._compact(listed)  # what the second process does with its older listing
    assert len(now) == 1 and not any(p.exists() for p in listed)
    assert len(second) == 60
    found, got = second.get(_keys(10, "3"))
    assert found.all() and (got == 3).all()
