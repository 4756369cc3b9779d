"""One-off export of the neural encoders from their PyTorch weights to ONNX.

This is the only module that imports torch (and transformers), and only inside functions: serving
and batch prediction run the exported files under ONNX Runtime. Exports are atomic (written to a
temporary file in the destination folder, then `os.replace`d), so an interrupted export never
leaves a truncated model where an encoder would load it, and two processes exporting the same file
at once both end with a complete one.
"""

from __future__ import annotations

import contextlib
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


def load_effnet_torch(name: str, size: int) -> torch.nn.Module:
    """The EfficientNet-Lite feature extractor in PyTorch, in eval mode: image -> (N, 1280).

    `image_size=size` rebuilds the static 'same' padding for the resolution it will run at; the
    activation stays ReLU6 (calling the package's `set_swish()` would silently swap it for swish
    and ruin the pretrained features). The package prints a line on load; it is swallowed.
    """
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from .image import effnet_spec

    spec = effnet_spec(name)
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            spec.model_name, weights_path=str(spec.weights_path()), image_size=size
        )
    net.eval()

    class EffNetFeatures(torch.nn.Module):
        """Last convolution's activations, averaged over space (global average pooling)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.inner.extract_features(pixels).mean(dim=(2, 3))  # type: ignore[operator]

    return EffNetFeatures(net).eval()


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


def export_effnet(name: str, size: int, out_path: str | Path, *, version: str = "") -> Path:
    """Export EfficientNet-Lite `name` ("effnet-lite0", "effnet-lite2") at `size` px to ONNX.

    The graph takes float32 `pixels` (N, 3, size, size), already normalised, and returns
    `features` (N, 1280); the batch axis is dynamic.
    """
    import torch

    from .image import effnet_spec

    spec = effnet_spec(name)
    model = load_effnet_torch(name, size)
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

    metadata = {
        "encoder": name,
        "encoder_version": version,
        "size": str(size),
        "weights_file": spec.weights_path().name,
        "weights_sha256": file_sha256(spec.weights_path()),
        "mean": "127",
        "std": "128",
    }
    return _atomic_export(write, Path(out_path), metadata)


def export_minilm(out_path: str | Path, *, version: str = "") -> Path:
    """Export MiniLM-L6-v2's transformer to ONNX (pooling and normalisation stay in NumPy).

    Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64, N x T), output
    `last_hidden_state` (N, T, 384); batch and sequence axes are dynamic.
    """
    import torch

    from .text import minilm_model_dir

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
