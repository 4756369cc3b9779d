"""Default folders for what prodcat writes outside a project: exported ONNX models, feature caches.

They live in the per-user cache folder (platformdirs) so that a fresh clone, a notebook and the CLI
share one copy of each exported model instead of exporting it again per working directory. The
environment variable `PRODCAT_CACHE_DIR` moves everything (CI machines, read-only home folders,
containers with a mounted volume).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_DIR_ENV = "PRODCAT_CACHE_DIR"


def default_cache_dir() -> Path:
    """The root of prodcat's caches: `$PRODCAT_CACHE_DIR` if set (and not empty), else the user's
    cache folder for "prodcat" (e.g. ~/.cache/prodcat on Linux). The folder is not created here:
    only writers create it, so that merely reading a setting never touches the disk."""
    override = os.environ.get(CACHE_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path("prodcat")


def default_onnx_dir() -> Path:
    """Where exported ONNX encoders are kept unless an `onnx_dir` is given."""
    return default_cache_dir() / "onnx"


def tuned_scratch_dir() -> Path:
    """Where `--fine-tune-whole` exports its tuned photo network until the model is saved; saving
    moves the file into the model folder, so nothing piles up here (13 MB per training)."""
    return default_onnx_dir() / "tuned"
