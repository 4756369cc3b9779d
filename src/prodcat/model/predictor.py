"""In-memory prediction: (title, photo bytes or file) -> Prediction, on ONNX Runtime alone.

The path the REST API, `prodcat predict` and `Model.predict(products)` share, so the three give the
same answers for the same product. Photos are decoded and preprocessed (`prepare`, Pillow releases
the GIL) apart from the networks (`run`), so a caller can decode the next products in worker
threads while ONNX Runtime encodes the current ones. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL.Image import Image as PILImage

from prodcat.catalogue import Product
from prodcat.catalogue.images import MAX_PIXELS, ImageError, load_image, read_image
from prodcat.encoders.base import Encoder, ImageEncoder, resolve_threads
from prodcat.encoders.registry import encoder_info, is_trunk, split_encoders
from prodcat.heads import Inputs
from prodcat.heads.inputs import restrict
from prodcat.model.networks import Networks, Pending
from prodcat.model.prediction import Prediction

if TYPE_CHECKING:  # the bundle runs its predictions through this module, never the reverse
    from prodcat.model.bundle import Model

# Products per network call in `predict_products`; decoding runs PREFETCH chunks ahead.
CHUNK = 64
PREFETCH = 2


@dataclass(frozen=True)
class ProductInput:
    """One product to label: its id, title ('' if none) and photo (encoded bytes, a file, None);
    `explain`: its answer carries its reasons (`prodcat.model.explain`)."""

    id: str
    title: str = ""
    image: bytes | Path | None = None
    explain: bool = False


@dataclass
class Prepared:
    """Products with their photos decoded and preprocessed, ready for the networks."""

    items: list[ProductInput]
    pixels: np.ndarray | None  # uint8 (n_decoded, size, size, 3)
    decoded: np.ndarray  # (n,) bool: which items' photos are in `pixels`, in order
    errors: dict[int, str] = field(default_factory=dict)  # item index -> why its photo failed
    decode_ms: float = 0.0


@dataclass
class StageTimings:
    """Milliseconds spent per stage for one call (a batch shares them)."""

    decode_ms: float = 0.0
    image_ms: float = 0.0
    text_ms: float = 0.0
    head_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in vars(self).items()}


class Predictor:
    """A model and its encoders, opened once; `predict` labels items held in memory."""

    def __init__(
        self,
        model: Model,
        *,
        max_pixels: int = MAX_PIXELS,
        backend: str = "onnx",
        threads: int | None = None,
    ) -> None:
        """`backend="torch"` runs the neural encoders in PyTorch: the reference the benchmarks
        compare against (load the model with `runtime="torch"` for a torch head too). `threads`:
        the cores the networks may use (default $PRODCAT_THREADS, else all), one network call per
        core (`prodcat.model.networks`)."""
        self.model = model
        self.max_pixels = max_pixels
        self.threads = resolve_threads(threads) if backend == "onnx" else 1
        self.image_encoder: ImageEncoder | None = None
        if model.image_encoder:
            name = model.image_encoder
            encoder = model.get_encoder(name, **_options(name, backend))
            if not isinstance(encoder, ImageEncoder):
                raise TypeError(f"{model.image_encoder} is not an image encoder")
            self.image_encoder = encoder
        self.text_encoders: list[Encoder] = [
            model.get_encoder(part, **_options(part, backend))
            for part in split_encoders(model.text_encoder or "")
        ]
        self.networks = Networks(self.image_encoder, self.text_encoders, self.threads)
        # A fine-tune head reads the trunk's activations, the others pooled features.
        self._image_input = "image_activations" if is_trunk(model.image_encoder) else "image"

    def warm_up(self) -> None:
        """Open every ONNX session now (they open lazily), so the first request is not slow."""
        white = white_png()
        self.predict([ProductInput("warm-up", "warm up", white)])

    # -- the two stages ---------------------------------------------------------------------
    def prepare(self, items: Sequence[ProductInput]) -> Prepared:
        """Decode and preprocess the photos; a photo that fails gets an error, not an exception."""
        started = time.perf_counter()
        items = list(items)
        decoded = np.zeros(len(items), dtype=bool)
        arrays, errors = [], {}
        encoder = self.image_encoder
        for index, item in enumerate(items):
            if encoder is None or item.image is None:
                continue
            try:
                arrays.append(encoder.preprocess(self._decode(item.image, encoder.draft_size)))
            except ImageError as exc:
                errors[index] = f"image: {exc}"
                continue
            decoded[index] = True
        pixels = np.stack(arrays) if arrays else None
        elapsed = (time.perf_counter() - started) * 1000
        return Prepared(items, pixels, decoded, errors, elapsed)

    def _decode(self, image: bytes | Path, draft_size: int) -> PILImage:
        if isinstance(image, Path):
            return load_image(image, max_pixels=self.max_pixels, draft_size=draft_size)
        return read_image(image, max_pixels=self.max_pixels, draft_size=draft_size)

    def run(
        self,
        prepared: Prepared,
        *,
        min_confidence: float | None = None,
        threshold: float | None = None,
        modalities: Collection[str] | None = None,
    ) -> tuple[list[Prediction], StageTimings]:
        """Encode, classify and answer the prepared items, in order."""
        return self.finish(
            prepared,
            self.start(prepared),
            min_confidence=min_confidence,
            threshold=threshold,
            modalities=modalities,
        )

    def start(self, prepared: Prepared) -> Pending:
        """Start the networks' calls on the prepared items (`finish` waits for them)."""
        return self.networks.submit(prepared.pixels, [i.title for i in prepared.items if i.title])

    def finish(
        self,
        prepared: Prepared,
        pending: Pending,
        *,
        min_confidence: float | None = None,
        threshold: float | None = None,
        modalities: Collection[str] | None = None,
    ) -> tuple[list[Prediction], StageTimings]:
        """The answers of items whose network calls `start` began: the head, the gate."""
        items, n = prepared.items, len(prepared.items)
        timings = StageTimings(decode_ms=prepared.decode_ms)
        features: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        titles = [item.title for item in items]
        has_text = np.array([t != "" for t in titles], dtype=bool)
        encoded = pending.result()
        timings.image_ms, timings.text_ms = encoded.image_ms, encoded.text_ms
        if self.image_encoder is not None:
            matrix = np.zeros((n, self.image_encoder.dim), dtype=np.float32)
            if encoded.image is not None:
                matrix[prepared.decoded] = encoded.image
            features[self._image_input], masks["image_mask"] = matrix, prepared.decoded
        if self.text_encoders:
            width = sum(e.dim for e in self.text_encoders)
            matrix = np.zeros((n, width), dtype=np.float32)
            if encoded.text is not None:
                matrix[has_text] = encoded.text
            features["text"], masks["text_mask"] = matrix, has_text
        if self._image_input == "image_activations" and "text" not in features:
            # A photo-only fine-tune head still has a text branch: it gets an empty input.
            features["text"] = np.zeros((n, 0), dtype=np.float32)
            masks["text_mask"] = np.zeros(n, dtype=bool)
        t0 = time.perf_counter()
        inputs = restrict(Inputs(texts=titles, **features, **masks), modalities)
        logits = self.model.head.decision_logits(inputs)
        errors = {items[i].id: message for i, message in prepared.errors.items()}
        answers = self.model.predictions(
            [item.id for item in items],
            self.model.calibrate(logits, inputs),
            min_confidence=min_confidence,
            errors=errors,
            inputs=inputs,
            threshold=threshold,
            logits=logits,
        )
        self._explain(items, inputs, logits, answers)
        timings.head_ms = (time.perf_counter() - t0) * 1000
        return answers, timings

    def _explain(
        self,
        items: Sequence[ProductInput],
        inputs: Inputs,
        logits: np.ndarray,
        answers: list[Prediction],
    ) -> None:
        """Attach the reasons of the items that asked for them."""
        rows = [i for i, item in enumerate(items) if item.explain]
        if rows:
            from prodcat.model.explain import attach, title_encoding

            attach(self.model, inputs, logits, answers, rows, title_encoding(self.text_encoders))

    # -- conveniences ------------------------------------------------------------------------
    def predict(
        self, items: Sequence[ProductInput], *, min_confidence: float | None = None
    ) -> list[Prediction]:
        """One answer per item, in order (a photo that fails is answered from the title)."""
        return self.run(self.prepare(items), min_confidence=min_confidence)[0]

    def predict_products(
        self,
        products: Sequence[Product],
        *,
        min_confidence: float | None = None,
        threshold: float | None = None,
        modalities: Collection[str] | None = None,
        chunk: int = CHUNK,
        explain: bool = False,
    ) -> list[Prediction]:
        """Catalogue products, in chunks: two threads read and decode the next chunks while the
        current one runs through the networks (both release the GIL), and the head answers the
        previous one. `explain`: each answer carries its reasons."""
        answers: list[Prediction] = []
        previous: tuple[Prepared, Pending] | None = None

        def finish(done: tuple[Prepared, Pending]) -> list[Prediction]:
            return self.finish(
                *done, min_confidence=min_confidence, threshold=threshold, modalities=modalities
            )[0]

        for prepared in self.prepare_chunks(products, chunk=chunk, explain=explain):
            # This chunk's network calls run while the head answers the previous chunk.
            pending = self.start(prepared)
            if previous is not None:
                answers += finish(previous)
            previous = (prepared, pending)
        return answers + finish(previous) if previous is not None else answers

    def prepare_chunks(
        self, products: Sequence[Product], *, chunk: int = CHUNK, explain: bool = False
    ) -> Iterator[Prepared]:
        items = [ProductInput(p.id, p.text, p.image, explain) for p in products]
        chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(self.prepare, c) for c in chunks[:PREFETCH]]
            for i in range(len(chunks)):
                prepared = futures[i].result()
                if i + PREFETCH < len(chunks):
                    futures.append(pool.submit(self.prepare, chunks[i + PREFETCH]))
                yield prepared


def _options(encoder: str, backend: str) -> dict[str, str | int]:
    """The neural encoders' options: their backend, and one thread per session on ONNX Runtime
    (the Predictor spreads the calls over the cores itself)."""
    if not encoder_info(encoder).neural:
        return {}
    return {"threads": 1} if backend == "onnx" else {"backend": backend}


def white_png() -> bytes:
    """A small white PNG (warm-up input)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 255, 255)).save(buffer, format="PNG")
    return buffer.getvalue()
