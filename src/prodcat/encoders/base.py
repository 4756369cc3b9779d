"""What every encoder is: a name, a modality, an output width, a version and `encode`.

The version string keys the on-disk feature cache, so it must name everything that can change the
numbers an encoder returns: the weights (by content hash, not file name), the input resolution, the
preprocessing, the runtime (ONNX opset or the torch reference) and a code revision bumped by hand
when the code itself changes its output. Two encoders with equal versions must give equal features.

Nothing here imports torch: the prediction path runs on ONNX Runtime alone.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeAlias

import numpy as np
from PIL import Image

from prodcat.catalogue.images import normalise, to_rgb, to_square_array

if TYPE_CHECKING:
    import onnxruntime
    import scipy.sparse

Modality: TypeAlias = Literal["image", "text"]
Backend: TypeAlias = Literal["onnx", "torch"]
BACKENDS: tuple[Backend, ...] = ("onnx", "torch")
EncoderOutput: TypeAlias = "np.ndarray | scipy.sparse.csr_matrix"

# (device, inode, mtime_ns, size) -> sha256 hex; hashing a 90 MB weight file takes ~0.2 s, and
# every encoder built in a process asks for its version, so each file is hashed once. Keyed on the
# inode rather than the path: a model folder's encoders are hard links to the exported files, and
# one content is hashed once whichever name reaches it.
_SHA_CACHE: dict[tuple[int, int, int, int], str] = {}
_SHA_LOCK = threading.Lock()
# The same key -> an ONNX file's metadata_props (`onnx_metadata`).
_META_CACHE: dict[tuple[int, int, int, int], dict[str, str]] = {}


def not_fitted_error(message: str) -> Exception:
    """scikit-learn's NotFittedError with `message` (what callers catch), or where the install
    lacks scikit-learn (the base: it only fits) a stand-in of the same bases."""
    try:
        from sklearn.exceptions import NotFittedError  # lazily: scikit-learn is slow to import
    except ImportError:
        return _NotFittedError(message)
    return NotFittedError(message)


class _NotFittedError(ValueError, AttributeError):
    """The base install's NotFittedError (scikit-learn's has these bases)."""


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to length 1 (a zero row stays zero): for cosine similarities."""
    x = np.asarray(x, dtype=np.float32)
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, memoised per (file, mtime, size).

    Keyed on mtime and size as well as the file so that a reinstalled package with new weights at
    the same path is hashed again instead of reusing a stale digest.
    """
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the weight file {path} does not exist; reinstall the package that provides it"
        ) from None
    key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _SHA_LOCK:
        cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    hex_digest = digest.hexdigest()
    with _SHA_LOCK:
        _SHA_CACHE[key] = hex_digest
    return hex_digest


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props (how prodcat exported it: weights hash, size...), memoised.

    Read from the file's top-level protobuf fields, skipping the graph: no `onnx` package (a
    training dependency) and no ONNX Runtime session, so an encoder's version costs microseconds.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"the ONNX file {path} does not exist") from None
    key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _SHA_LOCK:
        cached = _META_CACHE.get(key)
    if cached is not None:
        return dict(cached)
    try:
        with path.open("rb") as stream:
            found = _read_metadata_props(stream, stat.st_size)
    except (ValueError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable ONNX model: {exc}") from None
    with _SHA_LOCK:
        _META_CACHE[key] = found
    return dict(found)


# ModelProto's field number for metadata_props, and StringStringEntryProto's for key and value
# (onnx.proto); protobuf wire types: 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit.
_METADATA_FIELD, _KEY_FIELD, _VALUE_FIELD = 14, 1, 2


def _read_metadata_props(stream: BinaryIO, size: int) -> dict[str, str]:
    """Walk the top-level fields of a serialized ModelProto, keeping metadata_props only."""
    found: dict[str, str] = {}
    while stream.tell() < size:
        field, wire = _split_tag(_read_varint(stream))
        if wire == 0:
            _read_varint(stream)
        elif wire in (1, 5):
            stream.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        elif wire == 2:
            length = _read_varint(stream)
            if stream.tell() + length > size:
                raise ValueError("a field runs past the end of the file (truncated?)")
            if field == _METADATA_FIELD:
                key, value = _read_entry(stream.read(length))
                found[key] = value
            else:
                stream.seek(length, os.SEEK_CUR)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} at byte {stream.tell()}")
    return found


def _read_entry(blob: bytes) -> tuple[str, str]:
    """A StringStringEntryProto's (key, value)."""
    stream = io.BytesIO(blob)
    parts = {_KEY_FIELD: "", _VALUE_FIELD: ""}
    while stream.tell() < len(blob):
        field, wire = _split_tag(_read_varint(stream))
        if wire != 2:
            raise ValueError(f"a metadata entry has a field of wire type {wire}")
        length = _read_varint(stream)
        parts[field] = stream.read(length).decode("utf-8")
    return parts[_KEY_FIELD], parts[_VALUE_FIELD]


def _split_tag(tag: int) -> tuple[int, int]:
    return tag >> 3, tag & 7


def _read_varint(stream: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise EOFError("the file ends inside a field")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")


def short_hash(text: str, length: int = 12) -> str:
    """A short, stable hex digest of a string (file names, version suffixes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def check_backend(backend: str) -> Backend:
    """Validate a `backend` option, naming the accepted values on failure."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; expected one of {list(BACKENDS)}")
    return backend


def check_positive_int(name: str, value: object) -> int:
    """Validate an integer option such as `batch_size`; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; expected a positive integer")
    return int(value)


THREADS_VARIABLE = "PRODCAT_THREADS"  # a Ray worker's CPUs: its share, not the whole machine
# Photos per call of a photo network. Small batches keep a call's activations in the cores'
# caches: EfficientNet-Lite0 at 224 px on the 2-core development machine used 5.1-5.6 ms of CPU
# per photo in batches of 4 against 8.6-9.2 ms in batches of 32 (docs/latency.md). The answers
# do not depend on it.
PHOTO_BATCH = 4
# Titles per call of MiniLM: 1.64 ms of CPU per title in batches of 16 against 2.09 in batches of
# 64 (medians of 4 runs of 512 sample titles); the same vectors.
TITLE_BATCH = 16


def resolve_threads(threads: int | None) -> int:
    """The ONNX Runtime intra-op thread count: the given one, else $PRODCAT_THREADS, else every
    core of the machine."""
    if threads is None:
        given = os.environ.get(THREADS_VARIABLE, "").strip()
        if given.isdigit() and int(given) > 0:
            return int(given)
        return max(1, os.cpu_count() or 1)
    return check_positive_int("threads", threads)


def onnx_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """Open an ONNX model on the CPU with a fixed thread count.

    One intra-op pool and sequential execution: the encoders are single chains of layers, so
    inter-op parallelism only adds threads that compete for the same cores.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    # Idle worker threads sleep instead of spinning: on shared cores spinning burnt 2.3x the CPU per
    # product and ran 2.5x slower (8-product batches, load average ~10).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def open_or_export(
    path: Path,
    *,
    threads: int,
    expected_metadata: Mapping[str, str],
    export: Callable[[Path], object],
) -> onnxruntime.InferenceSession:
    """Open an exported encoder, exporting it first when the file is absent or unusable.

    The file name already carries a hash of the encoder's version; the metadata check catches a
    file copied or renamed by hand. An unreadable file (e.g. written by a tool that is not atomic)
    is replaced rather than failing every later prediction.
    """
    if path.exists():
        try:
            return checked_session(path, threads, expected_metadata)
        except Exception as exc:  # ORT raises its own exception types for a corrupt file
            warnings.warn(
                f"the ONNX file {path} cannot be used ({exc}); exporting it again",
                RuntimeWarning,
                stacklevel=3,
            )
    export(path)
    return checked_session(path, threads, expected_metadata)


def has_metadata(path: Path, expected: Mapping[str, str]) -> bool:
    """Whether `path` is a readable ONNX file whose metadata holds `expected` (a cheap check
    that needs no session; `checked_session` opens and checks it)."""
    try:
        meta = onnx_metadata(path)
    except (OSError, ValueError):
        return False
    return all(meta.get(key) == value for key, value in expected.items())


def checked_session(
    path: Path, threads: int, expected: Mapping[str, str]
) -> onnxruntime.InferenceSession:
    """Open `path` and compare its metadata_props with what this encoder expects."""
    session = onnx_session(path, threads)
    meta = session.get_modelmeta().custom_metadata_map
    found = {key: meta.get(key) for key in expected}
    if found != dict(expected):
        raise ValueError(f"its metadata {found} does not match the expected {dict(expected)}")
    return session


def batches(count: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most `batch_size` covering range(count)."""
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


class Encoder(ABC):
    """A named function from images or titles to feature vectors, plus the version that keys caches.

    Subclasses set `name` and `modality` and implement `dim`, `version` and `encode`.
    """

    name: str
    modality: Modality
    # Items per network call; callers that batch on their own (the feature cache) follow it.
    batch_size: int = 1024
    # False for encoders that compute faster than the cache could read their output.
    cacheable: bool = True

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of a feature vector."""

    @property
    @abstractmethod
    def version(self) -> str:
        """Changes whenever the encoder's outputs could change; keys the feature cache."""

    @abstractmethod
    def encode(self, items: Sequence[Any]) -> EncoderOutput:
        """float32 (N, dim) features for N items, in order."""

    def files(self) -> dict[str, Path]:
        """The files this encoder runs from, by the name each must have in a folder of its own
        (e.g. {"model.onnx": ..., "tokenizer.json": ...}); exported first if need be.

        A model folder keeps a copy of them, and `get_encoder(name, onnx_file=<folder>/model.onnx)`
        then runs from that folder alone: no torch, no weight packages. Encoders with nothing to
        run from (hashed words) or fitted into the head (bag of words) have none.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


class TextEncoder(Encoder):
    """An encoder of product titles."""

    modality: Modality = "text"

    @staticmethod
    def check_texts(texts: Sequence[str]) -> list[str]:
        """Refuse a lone string (it is a Sequence[str] of characters) and non-string items."""
        if isinstance(texts, str | bytes):
            raise TypeError(
                "expected a sequence of titles, got a single string; wrap it in a list: [title]"
            )
        out = list(texts)
        for index, text in enumerate(out):
            if not isinstance(text, str):
                raise TypeError(
                    f"title {index} is a {type(text).__name__}, expected str; replace missing "
                    "titles with '' before encoding"
                )
        return out


class ImageEncoder(Encoder):
    """An encoder of product photos with its own resolution and pixel normalisation.

    Preprocessing (`preprocess`) and the network (`encode_arrays`) are separate so that decoding and
    resizing can run in worker threads while the network sees full batches.
    """

    modality: Modality = "image"
    size: int
    mean: float
    std: float
    # The photo side (px) a model was trained on: larger photos are first brought down to it
    # (`images.fit_to_side`). None: photos go to the network at their own resolution. Not part
    # of `version`: photos at or below this side give the same features either way, and the
    # feature cache keys the others apart (`features.encode`).
    fit_side: int | None = None

    @property
    def draft_size(self) -> int:
        """Hint for `images.read_image(draft_size=...)`: JPEG decoding may skip finer detail."""
        if self.fit_side is not None:
            return min(self.size, self.fit_side)
        return self.size

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """Decoded image -> uint8 (size, size, 3): padded to a square on white, then resized."""
        if not isinstance(img, Image.Image):
            raise TypeError(
                f"expected a PIL.Image.Image, got {type(img).__name__}; decode files with "
                "prodcat.catalogue.images.load_image or read_image first"
            )
        if img.mode != "RGB":
            img = to_rgb(img)
        return to_square_array(img, self.size, self.fit_side)

    def encode(self, items: Sequence[Image.Image]) -> np.ndarray:
        """float32 (N, dim) features for N decoded images."""
        arrays = [self.preprocess(img) for img in items]
        if not arrays:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_arrays(np.stack(arrays))

    def check_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Validate a preprocessed batch: uint8 (N, size, size, 3)."""
        expected = f"a uint8 array of shape (N, {self.size}, {self.size}, 3) from preprocess()"
        if not isinstance(batch, np.ndarray):
            raise TypeError(f"expected {expected}, got {type(batch).__name__}")
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (self.size,) * 2 + (3,):
            raise ValueError(
                f"expected {expected}, got dtype {batch.dtype} and shape {batch.shape}; "
                f"this encoder runs at {self.size} px"
            )
        return batch

    def normalise(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW with this encoder's mean and std."""
        return normalise(batch, self.mean, self.std)

    @abstractmethod
    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, dim) features for a uint8 (N, size, size, 3) batch from `preprocess`."""
