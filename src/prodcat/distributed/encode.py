"""`prodcat encode --engine ray`: fill the shared feature cache from a cluster.

The rows are read on the cluster as for prediction (with every photo hashed and decoded, as
`prodcat encode` checks them locally); each actor opens the cache folder itself and encodes its
batches through `encode_products`, so it writes its own packs. Packs are renamed into place
atomically, so concurrent writers are safe; the driver opens each store first, so a store due
for compaction is compacted once, by one process, before the workers start. Training then reads
the cache as today. The cache folder must be shared by every worker (the same path).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodcat.catalogue import ColumnMapping
from prodcat.distributed.cluster import (
    WorkerPlan,
    connected,
    plan_workers,
    require_ray,
    worker_errors,
)
from prodcat.distributed.predict import read_rows, spread
from prodcat.distributed.rows import PRODUCT, batch_rows, input_units
from prodcat.encoders.base import THREADS_VARIABLE
from prodcat.features.encode import FLUSH_EVERY
from prodcat.progress import progress_bar


@dataclass
class EncoderTotals:
    """One encoder's figures over the run (summed over batches)."""

    name: str
    dim: int = 0
    products: int = 0
    computed: int = 0
    cached: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # product id -> why it has no vector


class EncodeWorker:
    """A Ray actor: the encoders and its own handle on the shared cache folder."""

    def __init__(self, encoder_names: Sequence[str], cache_dir: str, threads: int) -> None:
        os.environ[THREADS_VARIABLE] = str(threads)
        from prodcat.encoders.registry import get_encoder
        from prodcat.features.cache import FeatureCache

        self.encoders = [get_encoder(name) for name in encoder_names]
        self.cache = FeatureCache(cache_dir)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        from prodcat.features.encode import encode_products

        rows = [row for row in batch_rows(batch) if row.kind == PRODUCT]
        products = [p for row in rows if (p := row.product()) is not None]
        out: dict[str, list[Any]] = {k: [] for k in ("encoder", "dim", "figures")}
        for encoder in self.encoders:
            feats = encode_products(products, encoder, self.cache, progress=False)
            figures = [len(feats.ids), feats.n_computed, feats.n_cached, feats.errors]
            out["encoder"].append(encoder.name)
            out["dim"].append(encoder.dim)
            out["figures"].append(json.dumps([len(products), *figures]))
        return out


def encode_on_ray(
    source: Path,
    encoder_names: Sequence[str],
    cache_dir: Path,
    mapping: ColumnMapping,
    *,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[list[EncoderTotals], WorkerPlan, list[str]]:
    """Encode every accepted product of `source` into `cache_dir`; returns each encoder's
    totals, the workers used, and the rejected rows' messages (as `prodcat check` words them)."""
    from prodcat.encoders.registry import get_encoder
    from prodcat.features.cache import FeatureCache

    require_ray()  # before any work: without Ray, say what to install at once
    units = input_units(source)
    cache = FeatureCache(cache_dir)
    for name in encoder_names:  # compact any store that needs it here, once, before the workers
        encoder = get_encoder(name)
        if encoder.cacheable:
            len(cache.store(encoder.version))
    with connected(address) as ray:
        plan = plan_workers(ray, workers)
        rows = read_rows(ray, units, mapping, verify_images=True)
        from ray.data.expressions import col

        rejected = [row["message"] for row in rows.filter(expr=col("kind") != PRODUCT).take_all()]
        count = rows.count() - len(rejected)
        rows = spread(rows, count, plan, FLUSH_EVERY)
        # Straight from the materialized rows: an upstream task (a filter) would wait for a CPU
        # that the actors hold, forever; the workers skip the rejected rows themselves.
        encoded = rows.map_batches(
            EncodeWorker,
            fn_constructor_kwargs={
                "encoder_names": list(encoder_names),
                "cache_dir": str(cache.root.resolve()),
                "threads": plan.cpus,
            },
            batch_size=FLUSH_EVERY,  # at most one new pack per batch and encoder
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.workers, max_tasks_in_flight_per_actor=1),
            num_cpus=plan.cpus,
        )
        totals = {name: EncoderTotals(name) for name in encoder_names}
        with (
            worker_errors(),
            progress_bar("encoding", count, enabled=progress and count > 0) as advance,
        ):
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                for name, dim, text in zip(
                    batch["encoder"], batch["dim"], batch["figures"], strict=True
                ):
                    done = _add(totals[str(name)], int(dim), json.loads(str(text)))
                    advance(done if name == encoder_names[0] else 0)
    return list(totals.values()), plan, rejected


def _add(totals: EncoderTotals, dim: int, figures: list[Any]) -> int:
    """Add one batch's figures; returns the batch's products (for the progress bar)."""
    batch_products, with_vector, computed, cached, errors = figures
    totals.dim = dim
    totals.products += with_vector
    totals.computed += computed
    totals.cached += cached
    totals.errors.update(errors)
    return int(batch_products)
