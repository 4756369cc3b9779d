"""The model of one worker process: loaded once, fed by a micro-batcher, guarded by input checks.

Requests decode their own photo in a worker thread, then queue for the networks. One task takes
everything queued and runs it as one batch on a single thread, so concurrent requests share
network calls instead of fighting over the cores (ONNX Runtime already uses all of them per call);
under light load a request runs alone, with no wait.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from prodcat.model.bundle import Model
from prodcat.model.prediction import Prediction
from prodcat.model.predictor import Predictor, Prepared, ProductInput, StageTimings
from prodcat.monitor import DriftReport, Observations, RollingWindow, compare, photo_side

from .settings import Settings

ALLOWED_CONTROLS = {"\t", "\n", "\r"}


class InputError(ValueError):
    """A product the API cannot use; `field` names the part, `status` the HTTP status."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def check_title(title: object, max_chars: int, field: str = "title") -> str:
    """A usable title ('' when absent), or an InputError that says what is wrong with it."""
    if title is None:
        return ""
    if not isinstance(title, str):
        raise InputError(f"{field} is a {type(title).__name__}; expected a string", field=field)
    if len(title) > max_chars:
        raise InputError(
            f"{field} has {len(title):,} characters; the limit is {max_chars:,}", field=field
        )
    for position, char in enumerate(title):
        category = unicodedata.category(char)
        if (category == "Cc" and char not in ALLOWED_CONTROLS) or category == "Cs":
            what = "an unpaired surrogate" if category == "Cs" else "the control character"
            raise InputError(
                f"{field} contains {what} U+{ord(char):04X} at position {position}; "
                "expected plain text",
                field=field,
            )
    return " ".join(title.split())  # newlines and runs of spaces carry no meaning in a title


def decode_base64(data: str, max_bytes: int, field: str = "image_base64") -> bytes:
    """The bytes of a base64 photo; refuses invalid base64 and photos over the size limit."""
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise InputError(
            f"{field} holds more than {max_bytes:,} bytes; the limit is {max_bytes:,}",
            field=field,
            status=413,
        )
    text = "".join(data.split())
    if text.startswith("data:") and "," in text:  # a data URL: keep the payload
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{field} is not valid base64 ({exc})", field=field) from None
    if not raw:
        raise InputError(f"{field} is empty; send the photo's bytes in base64", field=field)
    return raw


@dataclass
class ServiceAnswer:
    """One product's answer from the service: the prediction and how long each stage took."""

    prediction: Prediction
    timings: dict[str, Any]  # stage -> ms, and batch_size


class ServicePredictor:
    """The worker's model, its version, its limits and the micro-batcher in front of it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        started = time.perf_counter()
        self.model = Model.load(settings.model_dir)
        self.predictor = Predictor(self.model, max_pixels=settings.max_image_pixels)
        self.model_version = self.model.version  # the bundle's: the desk reports the same
        if settings.warm_up:
            self.predictor.warm_up()
        self.load_seconds = time.perf_counter() - started
        # The recent products the drift alarm compares with the model's reference (None: the
        # model has no reference, it was trained before the alarm existed).
        self.window = RollingWindow(settings.drift_window) if self.model.reference else None
        self._class_index = {c: i for i, c in enumerate(self.model.classes)}
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[tuple[Prepared, asyncio.Future[object], float]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batcher on the running event loop (again if the loop changed: test clients
        that skip the lifespan run each request on a loop of its own)."""
        loop = asyncio.get_running_loop()
        if self._event_loop is loop and self._task is not None and not self._task.done():
            return
        self._event_loop = loop
        if self._executor is None:
            # One thread runs the networks: requests share batches instead of competing for cores.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prodcat-model")
        self._queue = asyncio.Queue()
        self._task = loop.create_task(self._batches())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- requests ---------------------------------------------------------------------------
    def product_input(
        self,
        index: str | None,
        title: object,
        image: bytes | None,
        *,
        prefix: str = "",
        explain: bool = False,
    ) -> ProductInput:
        """Check one product's fields; refuses a product with neither a title nor a photo.
        `explain`: its answer carries its reasons."""
        clean = check_title(title, self.settings.max_title_chars, field=f"{prefix}title")
        if image is not None and len(image) > self.settings.max_image_bytes:
            raise InputError(
                f"the image has {len(image):,} bytes; the limit is "
                f"{self.settings.max_image_bytes:,}",
                field=f"{prefix}image",
                status=413,
            )
        if not clean and image is None:
            raise InputError(
                "the product has neither a title nor an image; send a title, an image or both",
                field=f"{prefix}title",
            )
        return ProductInput(index or "", clean, image, explain)

    def prepare(self, item: ProductInput, image_field: str) -> Prepared:
        """Decode the photo (run in a worker thread); a photo that fails is an InputError."""
        prepared = self.predictor.prepare([item])
        if prepared.errors:
            message = prepared.errors[0].removeprefix("image: ")
            raise InputError(f"{image_field}: {message}", field=image_field)
        return prepared

    async def answer(self, prepared: Prepared) -> list[ServiceAnswer]:
        """Queue decoded products for the networks and wait for their answers."""
        await self.start()
        if self._queue is None:
            raise RuntimeError("the batcher did not start: no queue to put the request on")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        await self._queue.put((prepared, future, time.perf_counter()))
        return cast(list[ServiceAnswer], await future)

    # -- the batcher --------------------------------------------------------------------------
    async def _batches(self) -> None:
        queue = self._queue
        if queue is None:
            raise RuntimeError("the batcher runs only after start() made its queue")
        loop = asyncio.get_running_loop()
        window = self.settings.batch_window_ms / 1000
        while True:
            jobs = [await queue.get()]
            size = len(jobs[0][0].items)
            deadline = loop.time() + window
            while size < self.settings.max_micro_batch:
                try:
                    if window > 0 and loop.time() < deadline:
                        job = await asyncio.wait_for(queue.get(), deadline - loop.time())
                    else:
                        job = queue.get_nowait()
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                jobs.append(job)
                size += len(job[0].items)
            await self._run(jobs, loop)

    async def _run(
        self,
        jobs: list[tuple[Prepared, asyncio.Future[object], float]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        merged = merge_prepared([job[0] for job in jobs])
        executor = self._executor
        run_started = time.perf_counter()
        try:
            predictions, timings = await loop.run_in_executor(executor, self._predict, merged)
        except Exception as exc:  # the networks failed: every waiting request hears why
            for _, future, _ in jobs:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for prepared, future, queued in jobs:
            n = len(prepared.items)
            answers = [
                ServiceAnswer(
                    p, self._timings(prepared, timings, queued, run_started, len(merged.items))
                )
                for p in predictions[offset : offset + n]
            ]
            offset += n
            if not future.done():
                future.set_result(answers)

    def _predict(self, prepared: Prepared) -> tuple[list[Prediction], StageTimings]:
        predictions, timings = self.predictor.run(
            prepared, min_confidence=self.settings.min_confidence
        )
        if self.window is not None:
            self.window.add(self.observations(prepared, predictions))
        return predictions, timings

    # -- the drift alarm ----------------------------------------------------------------------
    def observations(self, prepared: Prepared, predictions: list[Prediction]) -> Observations:
        """What the drift alarm records of answered products (see `prodcat.monitor`)."""
        items = prepared.items
        return Observations(
            decisions=np.array([p.decision for p in predictions], dtype=object),
            # The top class and its probability: `category` may be an ancestor (min_confidence).
            confidence=np.array([p.top[0][1] for p in predictions]),
            ood_score=np.array(
                [np.nan if p.ood_score is None else p.ood_score for p in predictions]
            ),
            predicted=np.array([self._class_index[p.top[0][0]] for p in predictions]),
            has_photo=prepared.decoded,
            has_title=np.array([item.title != "" for item in items], dtype=bool),
            photo_side=np.array(
                [
                    photo_side(item.image) if ok else np.nan
                    for item, ok in zip(items, prepared.decoded, strict=True)
                ]
            ),
        )

    def drift_report(self) -> DriftReport | None:
        """The window against the reference; None without a reference or with too few products."""
        reference = self.model.reference
        if self.window is None or reference is None:
            return None
        if len(self.window) < self.settings.drift_min_products:
            return None
        return compare(
            reference,
            self.window.observations(),
            alpha=self.settings.drift_alpha,
            class_names=self.model.classes,
        )

    @staticmethod
    def _timings(
        prepared: Prepared, timings: StageTimings, queued: float, run_started: float, batch: int
    ) -> dict[str, Any]:
        return {
            "decode_ms": round(prepared.decode_ms, 3),
            "queue_ms": round((run_started - queued) * 1000, 3),
            "image_ms": round(timings.image_ms, 3),
            "text_ms": round(timings.text_ms, 3),
            "head_ms": round(timings.head_ms, 3),
            "batch_size": batch,
        }


def merge_prepared(parts: list[Prepared]) -> Prepared:
    """Several requests' decoded products as one batch, in order."""
    if len(parts) == 1:
        return parts[0]
    pixels = [p.pixels for p in parts if p.pixels is not None]
    errors: dict[int, str] = {}
    offset = 0
    for part in parts:
        errors.update({offset + i: message for i, message in part.errors.items()})
        offset += len(part.items)
    return Prepared(
        items=[item for p in parts for item in p.items],
        pixels=np.concatenate(pixels) if pixels else None,
        decoded=np.concatenate([p.decoded for p in parts]),
        errors=errors,
        decode_ms=sum(p.decode_ms for p in parts),
    )
