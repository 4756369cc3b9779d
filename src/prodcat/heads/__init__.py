"""Classification heads over frozen features, all behind one scikit-learn-style contract.

``HEADS`` maps each head's ``name`` (written to its saved ``config.json``) to its class, so that
`load_head` can reopen any saved head. Importing this package does not import torch: only
`FusionHead` and `FineTuneHead` need it, and only once they fit, predict or load. Nor does it import
scikit-learn: `TextLinearHead` and `ImageHead` are imported on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Head, read_config
from .finetune import FineTuneHead
from .fusion import FusionHead
from .inputs import Inputs

if TYPE_CHECKING:
    from .blend import BlendHead
    from .image import ImageHead
    from .text_linear import TextLinearHead

# The registry: head name -> (module, class). The name is what a saved head's config.json says
# and what `prodcat train --model` takes. The scikit-learn heads are imported on first use:
# importing scikit-learn costs ~1.8 s of CPU, which the torch heads' prediction path (the REST
# API's cold start) never needs.
_HEAD_CLASSES = {
    "fusion-blend": ("blend", "BlendHead"),
    "fusion": ("fusion", "FusionHead"),
    "text-linear": ("text_linear", "TextLinearHead"),
    "image": ("image", "ImageHead"),
    "fine-tune": ("finetune", "FineTuneHead"),
}
_LAZY = {cls: module for module, cls in _HEAD_CLASSES.values()}
# Every head can be trained by name; "fine-tune" is what `--fine-tune` swaps in for the photo part.
HEAD_NAMES: tuple[str, ...] = tuple(_HEAD_CLASSES)


def head_class(name: str) -> type[Head]:
    """The head class registered as `name` ("fusion-blend", "text-linear", "image" ...)."""
    if name not in _HEAD_CLASSES:
        raise ValueError(f"unknown head {name!r}; known heads: {', '.join(HEAD_NAMES)}")
    module, cls = _HEAD_CLASSES[name]
    found: type[Head] = getattr(importlib.import_module(f".{module}", __name__), cls)
    return found


def __getattr__(name: str) -> Any:
    if name == "HEADS":  # every head class by name (imports the scikit-learn ones)
        return {head: head_class(head) for head in _HEAD_CLASSES}
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_head(folder: str | Path) -> Head:
    """Reopen a head saved with `Head.save`, whatever its kind (read from config.json "name")."""
    config = read_config(folder)
    name = config.get("name")
    if name not in _HEAD_CLASSES:
        raise ValueError(
            f"{folder} holds a head named {name!r}, which this prodcat does not know; "
            f"known heads: {sorted(_HEAD_CLASSES)}"
        )
    return head_class(name).load(folder)


__all__ = [
    "HEADS",
    "HEAD_NAMES",
    "BlendHead",
    "FineTuneHead",
    "FusionHead",
    "Head",
    "ImageHead",
    "Inputs",
    "TextLinearHead",
    "head_class",
    "load_head",
]
