"""EfficientNet-Lite image encoders ("effnet-lite0", "effnet-lite2") on ONNX Runtime.

Lite variants because they were made for CPUs and phones: ReLU6 instead of swish, no
squeeze-and-excitation, so they export cleanly and run fast under ONNX Runtime. Features are the
last convolution's activations averaged over space (1280 values), taken before the ImageNet
classifier so that they describe the product rather than pick one of 1000 ImageNet labels.

With `cut=k` ("effnet-lite0-trunk", "effnet-lite2-trunk") an encoder stops earlier: it returns the
activations that enter block k, flattened to C*H*W values per photo. They are what fine-tuning
the last blocks needs (`prodcat.heads.FineTuneHead`): the frozen trunk runs once per photo under
ONNX Runtime and its output goes through the feature cache like any other features, so training
epochs only run the small tail.

The ONNX file is exported on first use (the only time torch is imported) into `onnx_dir` under a
name that contains a hash of the encoder's version, so a changed resolution or new weights can
never load a stale export. Given `onnx_file` (a model folder's copy), an encoder runs from that
file alone: its version comes from the weights hash stamped in the file at export, so it equals
the version of the encoder that exported it, and the weight packages are never imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prodcat.paths import default_onnx_dir

from .base import (
    PHOTO_BATCH,
    Backend,
    ImageEncoder,
    batches,
    check_backend,
    check_positive_int,
    checked_session,
    file_sha256,
    has_metadata,
    onnx_metadata,
    onnx_session,
    open_or_export,
    resolve_threads,
    short_hash,
)
from .weights import (
    STEM_CHANNELS,
    EffNetSpec,
    check_cut,
    effnet_spec,
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


def activation_shape(spec: EffNetSpec, size: int, cut: int) -> tuple[int, int, int]:
    """(C, H, W) of the activations entering block `cut` for a `size` px input.

    'same' padding makes every stride-2 layer output ceil(input / 2) pixels.
    """
    check_cut(spec, cut)
    channels, side = STEM_CHANNELS, -(-size // 2)
    block = 0
    for repeats, stride, out_channels in spec.stages:
        for repeat in range(repeats):
            if block == cut:
                return channels, side, side
            if repeat == 0 and stride == 2:
                side = -(-side // 2)
            channels = out_channels
            block += 1
    return channels, side, side


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
    threads; default all cores), `batch_size` (images per network call), `backend` ("onnx", or
    "torch": the reference the tests and benchmarks compare against; it imports torch), `cut`
    (None: the pooled features; a block index k: the activations entering block k, flattened to
    `dim` = C*H*W values with `activation_shape` (C, H, W); the encoder is then named
    "<variant>-trunk" and its ONNX file holds the stem and blocks[:k] only) and `onnx_file` (run
    from this export, e.g. a model folder's copy, instead of `onnx_dir`'s; never re-exported).
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
        batch_size: int = PHOTO_BATCH,
        backend: Backend = "onnx",
        cut: int | None = None,
        onnx_file: str | Path | None = None,
    ) -> None:
        self.spec = effnet_spec(name)
        self.cut = None if cut is None else check_cut(self.spec, cut)
        self.name = name if self.cut is None else f"{name}-trunk"
        self.size = check_size(self.spec.native_size if size is None else size)
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else default_onnx_dir()
        self.threads = resolve_threads(threads)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.backend = check_backend(backend)
        self._version: str | None = None
        self._runner: Callable[[np.ndarray], np.ndarray] | None = None
        self._lock = threading.Lock()
        self.onnx_file = None if onnx_file is None else Path(onnx_file)
        if self.onnx_file is not None:
            if not self.onnx_file.is_file():
                raise ValueError(f"{self.name}: its ONNX file {self.onnx_file} does not exist")
            self._check_file_metadata(onnx_metadata(self.onnx_file))

    def _check_file_metadata(self, meta: dict[str, str]) -> None:
        """Refuse an `onnx_file` exported for another variant, size or cut, or not by prodcat."""
        expected = {"encoder": self.spec.name, "size": str(self.size), "cut": None}
        if self.cut is not None:
            expected["cut"] = str(self.cut)
        found = {key: meta.get(key) for key in expected}
        if found != expected or not meta.get("weights_sha256"):
            raise ValueError(
                f"{self.onnx_file} is not an export of {self.name} at {self.size} px: its metadata "
                f"says {found} and {'a' if meta.get('weights_sha256') else 'no'} weights_sha256, "
                f"expected {expected} and a weights_sha256"
            )

    @property
    def activation_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of a trunk encoder's activations before flattening; None without a cut."""
        if self.cut is None:
            return None
        return activation_shape(self.spec, self.size, self.cut)

    @property
    def dim(self) -> int:
        """1280 for both lite0 and lite2; C*H*W for a trunk (9408 for lite0 at cut 14, 224 px)."""
        shape = self.activation_shape
        return FEATURE_DIM if shape is None else int(np.prod(shape))

    @property
    def weights_sha256(self) -> str:
        """Content hash of the .pth weight file (from the export's metadata with `onnx_file`)."""
        if self.onnx_file is not None:
            return onnx_metadata(self.onnx_file)["weights_sha256"]
        return file_sha256(self.spec.weights_path())

    @property
    def version(self) -> str:
        """e.g. "effnet-lite0/224px/pad-white/m127s128/w=<sha16>/onnx17/v1"; a trunk's has the cut:
        "effnet-lite0-trunk/224px/cut14/pad-white/..."."""
        if self._version is None:
            self._version = self._version_for(f"onnx{OPSET}" if self.backend == "onnx" else "torch")
        return self._version

    def _version_for(self, runtime: str) -> str:
        cut = "" if self.cut is None else f"cut{self.cut}/"
        return (
            f"{self.name}/{self.size}px/{cut}pad-white/m127s128/w={self.weights_sha256[:16]}/"
            f"{runtime}/{CODE_REVISION}"
        )

    @property
    def onnx_path(self) -> Path:
        """The exported model for this variant, resolution, cut and weights (named by version
        hash), or `onnx_file`."""
        if self.onnx_file is not None:
            return self.onnx_file
        onnx_version = self._version_for(f"onnx{OPSET}")
        cut = "" if self.cut is None else f"-cut{self.cut}"
        return self.onnx_dir / f"{self.name}-{self.size}px{cut}-{short_hash(onnx_version)}.onnx"

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, dim) for a uint8 (N, size, size, 3) batch, `batch_size` images per call."""
        batch = self.check_arrays(batch)
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
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

    def _expected_metadata(self) -> dict[str, str]:
        expected = {"weights_sha256": self.weights_sha256, "size": str(self.size)}
        if self.cut is not None:  # pooled exports predate the key: they are checked without it
            expected["cut"] = str(self.cut)
        return expected

    def _open_session(self) -> onnxruntime.InferenceSession:
        """Open the exported model, exporting it first (importing torch) if it is not there."""

        def export(path: Path) -> None:
            from .export import export_effnet

            export_effnet(self.spec.name, self.size, path, version=self.version, cut=self.cut)

        expected = self._expected_metadata()
        if self.onnx_file is not None:  # a model folder's copy: never exported again
            return checked_session(self.onnx_file, self.threads, expected)
        return open_or_export(
            self.onnx_path, threads=self.threads, expected_metadata=expected, export=export
        )

    def files(self) -> dict[str, Path]:
        """{"model.onnx": the export}, exported now if it is not there yet."""
        if not has_metadata(self.onnx_path, self._expected_metadata()):
            self._open_session()  # exports it
        return {"model.onnx": self.onnx_path}

    def _torch_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        import torch

        from .export import load_effnet_torch

        model = load_effnet_torch(self.spec.name, self.size, cut=self.cut)

        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(pixels)).numpy()

        return run


TUNED_SUFFIX = "-tuned"


class TunedEffNetEncoder(EfficientNetLiteEncoder):
    """A whole EfficientNet-Lite fine-tuned on one catalogue (`prodcat train --fine-tune-whole`),
    run from the ONNX file its training exported (`onnx_file`, kept in the model folder).

    Named "<variant>-tuned" ("effnet-lite0-tuned@160"); the same 1280 pooled features and
    preprocessing as the frozen encoder, but the version hashes the tuned file itself, so two
    trainings never share cached features and a model refuses a swapped file. ONNX only: there is
    no torch reference for weights that exist only as an export.
    """

    def __init__(
        self,
        name: str = "effnet-lite0",
        *,
        onnx_file: str | Path | None = None,
        size: int | None = None,
        threads: int | None = None,
        batch_size: int = PHOTO_BATCH,
        backend: Backend = "onnx",
    ) -> None:
        if onnx_file is None:
            raise ValueError(
                f"{name}{TUNED_SUFFIX} is a photo network fine-tuned by `prodcat train "
                "--fine-tune-whole`: it needs its onnx_file (the model folder's photo_encoder.onnx)"
            )
        if backend != "onnx":
            raise ValueError(f"{name}{TUNED_SUFFIX} runs on ONNX Runtime only, not {backend!r}")
        super().__init__(name, size=size, threads=threads, batch_size=batch_size)
        self.name = f"{name}{TUNED_SUFFIX}"
        self._tuned_file = Path(onnx_file)
        self.onnx_file = self._tuned_file
        if not self._tuned_file.is_file():
            raise ValueError(f"{self.name}: its ONNX file {self._tuned_file} does not exist")

    @property
    def weights_sha256(self) -> str:
        """Content hash of the tuned ONNX file (the weights exist nowhere else)."""
        return file_sha256(self._tuned_file)

    @property
    def onnx_path(self) -> Path:
        return self._tuned_file

    def _open_session(self) -> onnxruntime.InferenceSession:
        session = onnx_session(self._tuned_file, self.threads)
        meta = session.get_modelmeta().custom_metadata_map
        found = {key: meta.get(key) for key in ("encoder", "size")}
        expected = {"encoder": self.name, "size": str(self.size)}
        if found != expected:
            raise ValueError(
                f"{self._tuned_file} holds {found}, not the expected {expected}: the model folder "
                "was mixed from two models; retrain it"
            )
        return session
