"""`prodcat predict --engine ray`: read on the cluster, label in actors, write on the driver.

Ray Data reads the units (`rows.py`) and holds the rows; each actor loads the model once, with
ONNX Runtime's threads set to the actor's CPUs, and answers batches with the local engine's
`Predictor`; the driver streams the answers in input order into one `PredictionsWriter` (one file
or a folder of shards), so the output needs no shared storage, and draws the progress bar (rows
done, rows/s, ETA). The input, its photos and the model folder must be readable by every worker
at the same path (a shared file system, or the one machine of a local cluster).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodcat.catalogue import ColumnMapping
from prodcat.distributed.cluster import (
    RayEngineError,
    WorkerPlan,
    connected,
    plan_workers,
    require_ray,
    worker_errors,
)
from prodcat.distributed.rows import (
    PRODUCT,
    UNREADABLE,
    FirstIds,
    batch_rows,
    input_units,
    read_unit,
)
from prodcat.encoders.base import THREADS_VARIABLE
from prodcat.gate.gate import DECISIONS
from prodcat.model.predictions_file import (
    PredictionsWriter,
    Tally,
    Target,
    prediction_record,
    rejected_prediction,
)
from prodcat.progress import progress_bar

BATCH_ROWS = 256  # rows per actor call: big enough for the networks, small enough to balance


@dataclass(frozen=True)
class PredictOptions:
    """What `prodcat predict` passes on to the model (see `Predictor.predict_products`)."""

    min_confidence: float | None = None
    threshold: float | None = None
    modalities: Collection[str] | None = None


@dataclass
class RayRun:
    """What a Ray run did: the counts, the labelled flag, the workers it used, how long the
    reading and the labelling took, and each worker's peak memory (MB, by host:pid)."""

    tally: Tally
    labelled: bool
    plan: WorkerPlan
    rows: int = 0
    read_s: float = 0.0
    predict_s: float = 0.0
    first_answer_s: float = 0.0  # from the start of labelling to the first answers back
    peak_mb: dict[str, float] = field(default_factory=dict)
    # Per worker: (its first batch's start, its last batch's end, rows), on its own clock.
    spans: dict[str, tuple[float, float, int]] = field(default_factory=dict)

    def steady_rows_per_s(self) -> float:
        """The workers' summed rate from each one's first batch to its last: the throughput of
        a long job once every worker is up (start-up and reading excluded, gaps between
        batches included)."""
        return sum(rows / (end - start) for start, end, rows in self.spans.values() if end > start)

    def add_span(self, worker: str, start: float, end: float, rows: int) -> None:
        first, last, count = self.spans.get(worker, (start, end, 0))
        self.spans[worker] = (min(first, start), max(last, end), count + rows)


class PredictWorker:
    """A Ray actor: one model, answering batches of rows as predictions-file records (JSON)."""

    def __init__(
        self, model_dir: str, threads: int, labelled: bool, options: PredictOptions
    ) -> None:
        os.environ[THREADS_VARIABLE] = str(threads)  # every ONNX session of this process
        from prodcat.model.bundle import Model
        from prodcat.model.predictor import Predictor

        self.predictor = Predictor(Model.load(model_dir))
        self.labelled = labelled
        self.options = options
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        started = time.time()
        rows = batch_rows(batch)
        products = [row.product() for row in rows if row.kind == PRODUCT]
        answers = iter(
            self.predictor.predict_products(
                [p for p in products if p is not None],
                min_confidence=self.options.min_confidence,
                threshold=self.options.threshold,
                modalities=self.options.modalities,
            )
        )
        records = []
        for row in rows:
            answer = (
                next(answers) if row.kind == PRODUCT else rejected_prediction(row.id, row.message)
            )
            record = prediction_record(answer, row.product(), self.labelled)
            records.append(json.dumps(record, ensure_ascii=False))
        n = len(records)
        return {
            "record": records,
            "kind": [row.kind for row in rows],
            "place": [row.place for row in rows],
            "worker": [self.name] * n,
            "peak_mb": [peak_memory_mb()] * n,
            "span": [(started, time.time())] * n,
        }


def predict_on_ray(
    model_dir: Path,
    source: Path,
    target: Target,
    mapping: ColumnMapping,
    options: PredictOptions,
    *,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> RayRun:
    """Label every row of `source` into `target`; raises RayEngineError (or CatalogueError for a
    unit that cannot be read, with the local engine's message) before writing anything."""
    require_ray()  # before any work: without Ray, say what to install at once
    units = input_units(source)
    with connected(address) as ray:
        plan = plan_workers(ray, workers)
        started = time.perf_counter()
        rows = read_rows(ray, units, mapping, verify_images=False)
        count, labelled, all_labelled = _inspect(rows)
        rows = spread(rows, count, plan, BATCH_ROWS)
        run = RayRun(Tally(DECISIONS), all_labelled, plan, count)
        run.read_s = time.perf_counter() - started
        answered = rows.map_batches(
            PredictWorker,
            fn_constructor_kwargs={
                "model_dir": str(model_dir.resolve()),
                "threads": plan.cpus,
                "labelled": labelled,
                "options": options,
            },
            batch_size=BATCH_ROWS,
            batch_format="numpy",
            # Two batches in flight per actor: the next one is already there when a batch ends,
            # so an actor never waits for the scheduler between batches.
            compute=ray.data.ActorPoolStrategy(size=plan.workers, max_tasks_in_flight_per_actor=2),
            num_cpus=plan.cpus,
        )
        started = time.perf_counter()
        first_ids = FirstIds(mapping.id_column, labelled)
        with (
            worker_errors(),
            PredictionsWriter(target, labelled) as writer,
            progress_bar("predicting", count, enabled=progress and count > 0) as advance,
        ):
            for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
                run.first_answer_s = run.first_answer_s or time.perf_counter() - started
                records = first_ids.check(
                    [json.loads(text) for text in batch["record"]],
                    [str(kind) for kind in batch["kind"]],
                    [str(place) for place in batch["place"]],
                )
                writer.write(records)
                run.tally.add(records)
                _note_workers(run, batch)
                advance(len(records))
        run.predict_s = time.perf_counter() - started
    return run


def _note_workers(run: RayRun, batch: Mapping[str, Any]) -> None:
    """Each worker's peak memory and batch spans, from the answers' bookkeeping columns."""
    for worker, peak, span in zip(batch["worker"], batch["peak_mb"], batch["span"], strict=True):
        name = str(worker)
        run.peak_mb[name] = max(float(peak), run.peak_mb.get(name, 0.0))
        run.add_span(name, float(span[0]), float(span[1]), 1)


def peak_memory_mb() -> float:
    """This process's peak resident memory (VmHWM), MB; 0 where /proc is not there."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def read_rows(ray: Any, units: list[Path], mapping: ColumnMapping, *, verify_images: bool) -> Any:
    """The rows of every unit, read in Ray tasks (one per unit) and held in the object store;
    the first unit that cannot be read raises its reader's message, as locally."""
    from prodcat.catalogue import CatalogueError

    items = [{"path": str(unit)} for unit in units]
    with worker_errors():
        rows = (
            ray.data.from_items(items, override_num_blocks=len(items))
            .flat_map(read_unit, fn_kwargs={"mapping": mapping, "verify_images": verify_images})
            .materialize()
        )
    from ray.data.expressions import col

    unreadable = rows.filter(expr=col("kind") == UNREADABLE).take(1)
    if unreadable:
        raise CatalogueError(unreadable[0]["message"])
    return rows


def spread(rows: Any, count: int, plan: WorkerPlan, batch: int) -> Any:
    """The rows in blocks of about one batch (at least a few per worker), so every worker gets
    work: a shard is one block, and an actor ready first would otherwise take every block of a
    small input. A repartition of its own, before the actors hold the CPUs it needs."""
    blocks = max(plan.workers * 4, -(-count // batch))
    if rows.num_blocks() >= blocks:
        return rows
    return rows.repartition(blocks).materialize()


def _inspect(rows: Any) -> tuple[int, bool, bool]:
    """(rows, any product labelled, every product labelled): the predictions file's truth
    columns appear when any is; the score is printed when all are, as locally."""
    kinds = rows.select_columns(["kind", "label"]).to_pandas()
    products = kinds[kinds["kind"] == PRODUCT]
    has_label = products["label"] != ""
    return len(kinds), bool(has_label.any()), bool(len(products) and has_label.all())


__all__ = ["PredictOptions", "RayEngineError", "RayRun", "predict_on_ray", "read_rows"]
