"""Classification heads over frozen features, all behind one scikit-learn-style contract.

``HEADS`` maps each head's ``name`` (written to its saved ``config.json``) to its class, so that
`load_head` can reopen any saved head. Importing this package does not import torch: only
`FusionHead` and `FineTuneHead` need it, and only once they fit, predict or load.
"""

from __future__ import annotations

from pathlib import Path

from .base import Head, Inputs, read_config
from .blend import BlendHead
from .finetune import FineTuneHead
from .fusion import FusionHead
from .image import ImageHead
from .text_linear import TextLinearHead

HEADS: dict[str, type[Head]] = {
    TextLinearHead.name: TextLinearHead,
    ImageHead.name: ImageHead,
    FusionHead.name: FusionHead,
    FineTuneHead.name: FineTuneHead,
    BlendHead.name: BlendHead,
}


def load_head(folder: str | Path) -> Head:
    """Reopen a head saved with `Head.save`, whatever its kind (read from config.json "name")."""
    config = read_config(folder)
    name = config.get("name")
    if name not in HEADS:
        raise ValueError(
            f"{folder} holds a head named {name!r}, which this prodcat does not know; "
            f"known heads: {sorted(HEADS)}"
        )
    return HEADS[name].load(folder)


__all__ = [
    "HEADS",
    "BlendHead",
    "FineTuneHead",
    "FusionHead",
    "Head",
    "ImageHead",
    "Inputs",
    "TextLinearHead",
    "load_head",
]
