"""The photo and title networks of a Predictor, run as small calls spread over the cores.

Each ONNX session runs on one thread, and the calls (CALL_PHOTOS photos, TITLE_BATCH titles) go
to a pool of one worker thread per core. Cores that each run whole calls beat one call split over
every core: no fork-join waits inside the network, and a lone product's photo and title run at
the same time. On the 2-core development machine, calls of 4 products ran 12-25% faster this way
than through one two-thread session, and one product's networks took 5.2-5.4 ms instead of 7.0
(docs/latency.md). The vectors do not depend on the split.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prodcat.encoders.base import TITLE_BATCH, Encoder, ImageEncoder, batches

# Photos per call of a single-thread photo session: EfficientNet-Lite0 used 4.80 ms of CPU per
# photo in calls of 2, against 5.09 in calls of 1 and 5.17-5.18 in calls of 4 or 8 (medians of 5
# interleaved runs of 256 photos, 2-core machine). Sessions on several threads do best with more
# (`encoders.base.PHOTO_BATCH`).
CALL_PHOTOS = 2


@dataclass
class Encoded:
    """The networks' vectors for one batch, and when each modality's last call ended."""

    image: np.ndarray | None  # float32 (n_photos, dim), in the order given
    text: np.ndarray | None  # float32 (n_titles, sum of the text encoders' dims)
    image_ms: float = 0.0
    text_ms: float = 0.0


Call = Future[tuple[np.ndarray, float]]  # a network call's vectors and when it ended


@dataclass
class Pending:
    """A batch's network calls, started; `result()` waits for them."""

    started: float
    n_titles: int
    photo_calls: list[Call] = field(default_factory=list)
    title_calls: list[tuple[np.ndarray, Call]] = field(default_factory=list)  # rows, call

    def result(self) -> Encoded:
        encoded = Encoded(image=None, text=None)
        if self.photo_calls:
            parts = [call.result() for call in self.photo_calls]
            encoded.image = np.concatenate([vectors for vectors, _ in parts])
            encoded.image_ms = (max(ended for _, ended in parts) - self.started) * 1000
        if self.title_calls:
            done = [(rows, call.result()) for rows, call in self.title_calls]
            text = np.empty((self.n_titles, done[0][1][0].shape[1]), dtype=np.float32)
            for rows, (vectors, _) in done:
                text[rows] = vectors
            encoded.text = text
            encoded.text_ms = (max(ended for _, (_, ended) in done) - self.started) * 1000
        return encoded


class Networks:
    """The encoders of one Predictor and the worker threads their calls run on.

    `threads` is the number of cores to use: 1 runs every call in the caller's thread. The
    encoders must have been opened with one thread each (ONNX Runtime sessions are safe to run
    from several threads at once).
    """

    def __init__(self, image: ImageEncoder | None, texts: Sequence[Encoder], threads: int) -> None:
        self.image = image
        self.texts = list(texts)
        self.threads = threads
        # Calls submitted and not started yet; under a lock, as `+= 1` from several threads can
        # lose a count, and a count stuck above 0 would keep the API's batcher waiting.
        self._waiting = 0
        self._count_lock = threading.Lock()
        # Threads start on first use; made here so that concurrent batches share one pool.
        self._pool: ThreadPoolExecutor | None = None
        if threads > 1:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="prodcat-network")

    def encode(self, pixels: np.ndarray | None, titles: Sequence[str]) -> Encoded:
        """Vectors for decoded photos (uint8 (n, size, size, 3)) and non-empty titles."""
        return self.submit(pixels, titles).result()

    def submit(self, pixels: np.ndarray | None, titles: Sequence[str]) -> Pending:
        """Start `encode`'s calls and return at once: the caller can work meanwhile (e.g. run
        the head on the previous batch) and collect the vectors with `Pending.result()`."""
        pending = Pending(time.perf_counter(), len(titles))
        if self.image is not None and pixels is not None and len(pixels):
            # Fewer photos than calls for every core: smaller calls, so that no core waits.
            size = min(CALL_PHOTOS, -(-len(pixels) // self.threads))
            encode_photos = self.image.encode_arrays
            pending.photo_calls = [
                self._submit(encode_photos, pixels[part]) for part in batches(len(pixels), size)
            ]
        if self.texts and titles:
            # Longest first, so that each call pads its titles to a similar length.
            order = np.argsort([-len(t) for t in titles], kind="stable")
            pending.title_calls = [
                (order[part], self._submit(self._encode_titles, [titles[i] for i in order[part]]))
                for part in batches(len(titles), TITLE_BATCH)
            ]
        return pending

    @property
    def waiting(self) -> int:
        """How many calls wait for a free worker: while some do, the cores are all busy."""
        return self._waiting

    def _encode_titles(self, titles: list[str]) -> np.ndarray:
        return np.hstack([np.asarray(e.encode(titles), dtype=np.float32) for e in self.texts])

    def _submit(self, work: Callable[[Any], np.ndarray], data: Any) -> Call:
        """Run one call on a worker thread (in this thread with one core); its result comes with
        the time it ended."""

        def call() -> tuple[np.ndarray, float]:
            with self._count_lock:
                self._waiting -= 1
            return work(data), time.perf_counter()

        with self._count_lock:
            self._waiting += 1
        if self._pool is None:
            future: Future[tuple[np.ndarray, float]] = Future()
            future.set_result(call())
            return future
        return self._pool.submit(call)
