"""The model of one worker process: loaded once, fed by a micro-batcher, guarded by input checks.

Requests queue for the networks (a single product with its photo still encoded: the batch's
thread decodes it). The batcher takes everything queued and runs it as one batch, so concurrent
requests share network calls; up to one batch per core runs at a time (the Predictor's networks
run one call per core), so a batch's decoding, head and gate use a core while another batch's
calls hold the networks, and while every core is busy a new batch keeps gathering requests.
Under light load a request runs alone, with no wait, its photo and title networks side by side.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


@dataclass
class _Job:
    """One request waiting for the networks: decoded products, or one product still to decode
    (its photo field named for the error)."""

    prepared: Prepared | None
    item: ProductInput | None = None
    image_field: str = "image"
    future: asyncio.Future[list[ServiceAnswer]] | None = None
    queued: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return 1 if self.prepared is None else len(self.prepared.items)


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
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # batches in flight
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
            self._executor = ThreadPoolExecutor(
                max_workers=self.predictor.threads, thread_name_prefix="prodcat-model"
            )
        self._queue = asyncio.Queue()
        self._task = loop.create_task(self._batches())

    async def stop(self) -> None:
        tasks = [self._task, *self._running] if self._task is not None else [*self._running]
        self._task = None
        for task in tasks:
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

    async def answer_product(self, item: ProductInput, image_field: str) -> ServiceAnswer:
        """One product's answer; its photo is decoded with the batch it joins, on the batch's
        thread (one thread hop less per request). A photo that fails is an InputError."""
        (answer,) = await self._submit(_Job(prepared=None, item=item, image_field=image_field))
        return answer

    async def answer(self, prepared: Prepared) -> list[ServiceAnswer]:
        """Queue decoded products for the networks and wait for their answers."""
        return await self._submit(_Job(prepared=prepared))

    async def _submit(self, job: _Job) -> list[ServiceAnswer]:
        await self.start()
        if self._queue is None:
            raise RuntimeError("the batcher did not start: no queue to put the request on")
        job.future = asyncio.get_running_loop().create_future()
        await self._queue.put(job)
        return cast(list[ServiceAnswer], await job.future)

    # -- the batcher --------------------------------------------------------------------------
    async def _batches(self) -> None:
        queue = self._queue
        if queue is None:
            raise RuntimeError("the batcher runs only after start() made its queue")
        loop = asyncio.get_running_loop()
        window = self.settings.batch_window_ms / 1000
        poll = self.settings.gather_poll_ms / 1000
        busy = self.predictor.networks  # `waiting` > 0: every core is busy
        slots = asyncio.Semaphore(self.predictor.threads)
        while True:
            await slots.acquire()
            jobs = [await queue.get()]
            size = jobs[0].size
            deadline = loop.time() + window
            while size < self.settings.max_micro_batch:
                try:
                    if window > 0 and loop.time() < deadline:
                        job = await asyncio.wait_for(queue.get(), deadline - loop.time())
                    elif poll > 0 and busy.waiting:
                        job = await asyncio.wait_for(queue.get(), poll)
                    else:
                        job = queue.get_nowait()
                except (TimeoutError, asyncio.QueueEmpty):
                    if poll > 0 and busy.waiting:
                        continue
                    break
                jobs.append(job)
                size += job.size
            batch = loop.create_task(self._run(jobs, loop))
            self._running.add(batch)
            batch.add_done_callback(self._running.discard)
            batch.add_done_callback(lambda _: slots.release())

    async def _run(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        run_started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._predict, jobs)
        except Exception as exc:  # the networks failed: every waiting request hears why
            results = [exc] * len(jobs)
        for job, result in zip(jobs, results, strict=True):
            if job.future is None or job.future.done():
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                for answer in result:
                    answer.timings["queue_ms"] = round((run_started - job.queued) * 1000, 3)
                job.future.set_result(result)

    def _predict(self, jobs: list[_Job]) -> list[list[ServiceAnswer] | Exception]:
        """Decode what is not decoded yet, then answer every job's products as one batch."""
        results: list[list[ServiceAnswer] | Exception] = []
        parts: list[Prepared] = []
        for job in jobs:
            if job.prepared is not None:
                results.append([])
                parts.append(job.prepared)
                continue
            prepared = self.predictor.prepare([cast(ProductInput, job.item)])
            if prepared.errors:
                message = prepared.errors[0].removeprefix("image: ")
                field = job.image_field
                results.append(InputError(f"{field}: {message}", field=field))
                continue
            results.append([])
            parts.append(prepared)
        if not parts:
            return results
        merged = merge_prepared(parts)
        predictions, timings = self.predictor.run(
            merged, min_confidence=self.settings.min_confidence
        )
        if self.window is not None:
            self.window.add(self.observations(merged, predictions))
        answers = iter(predictions)
        waiting = [result for result in results if isinstance(result, list)]
        for result, prepared in zip(waiting, parts, strict=True):
            result += [
                ServiceAnswer(next(answers), self._timings(prepared, timings, len(merged.items)))
                for _ in prepared.items
            ]
        return results

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
    def _timings(prepared: Prepared, timings: StageTimings, batch: int) -> dict[str, Any]:
        return {
            "decode_ms": round(prepared.decode_ms, 3),
            "queue_ms": 0.0,  # set when the batch ends (`_run`)
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
