"""The drift alarm on real data: false alarms on batches like the validation part, and what fires
on a batch that is not.

Takes a model trained by `prodcat train` on the fashion catalogue (it holds its validation part's
reference, `monitor.json`), then:

1. **False alarms, the model's own reference**: `--batches` batches of `--batch-size` products
   drawn without replacement from the test part (products the reference never saw, drawn like the
   validation part), each compared with the stored reference: the share of batches that raise the
   alarm, and which signals fired.
2. **False alarms, the whole procedure**: the validation and test parts pooled; per draw, a fresh
   reference from a random validation-sized part of the pool and a batch from the rest. This
   also counts the noise of the reference itself (a different validation part each time).
3. **Drift**: `prodcat monitor`'s verdict on the whole test part (no drift expected) and on
   `../shared/datasets/fashion-hires`, with its 60 x 80 thumbnails and with its full-resolution
   photos (drift expected): which signals fire.

    prodcat train ../shared/datasets/fashion-products/products.csv \\
        --label-columns masterCategory,subCategory,articleType --top-classes 10 --out T10
    python benchmarks/monitor.py --model T10 --json monitor.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue import ColumnMapping, Product, load_catalogue
from prodcat.catalogue.split import split_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.model.bundle import Model
from prodcat.monitor import DEFAULT_ALPHA, Observations, Reference, compare

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a model from prodcat train")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--hires", type=Path, default=Path("../shared/datasets/fashion-hires"))
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    model = Model.load(args.model)
    if model.reference is None:
        raise SystemExit(f"{args.model} holds no drift reference: retrain it with prodcat train")
    cache = FeatureCache(args.cache_dir)
    started = time.perf_counter()
    labelled = [p for p in load_catalogue(args.data / "products.csv", FASHION).products if p.label]
    parts = split_catalogue(labelled)
    validation = observe(model, parts["validation"], cache)
    test = observe(model, parts["test"], cache)
    results: dict[str, Any] = {
        "model": str(args.model),
        "alpha": args.alpha,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "n_validation": len(validation),
        "n_test": len(test),
        "reference_bytes": len(json.dumps(model.reference.to_json(), separators=(",", ":"))),
    }
    rng = np.random.default_rng(args.seed)
    results["false_alarms_stored_reference"] = false_alarms(
        model.reference, test, args, rng, model.classes
    )
    results["false_alarms_fresh_reference"] = false_alarms_resampled(
        validation, test, len(model.classes), args, rng
    )
    results["test_part"] = verdict(model, test)
    for column in ("image", "hires_image"):
        mapping = ColumnMapping(
            label_column=None, label_columns=FASHION.label_columns, image_column=column
        )
        products = load_catalogue(args.hires / "products.csv", mapping).products
        results[f"hires_{column}"] = verdict(model, observe(model, products, cache))
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary(results), indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


def observe(model: Model, products: list[Product], cache: FeatureCache) -> Observations:
    inputs, _ = model.encode(products, cache, progress=False)
    return model.observe(products, inputs)


def false_alarms(
    reference: Reference,
    pool: Observations,
    args: argparse.Namespace,
    rng: np.random.Generator,
    classes: list[str],
) -> dict[str, Any]:
    """Batches drawn from `pool` (without replacement within a batch) against `reference`."""
    fired: Counter[str] = Counter()
    alarms = 0
    for _ in range(args.batches):
        rows = rng.choice(len(pool), size=args.batch_size, replace=False)
        report = compare(reference, pool.subset(rows), alpha=args.alpha, class_names=classes)
        alarms += report.drift
        fired.update(name for name, s in report.signals.items() if s.fired)
    return {"alarms": alarms, "rate": alarms / args.batches, "fired": dict(fired)}


def false_alarms_resampled(
    validation: Observations,
    test: Observations,
    n_classes: int,
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Per draw: a fresh reference from a validation-sized random part of validation + test, and
    a batch from the rest."""
    pool = Observations.concatenate([validation, test])
    fired: Counter[str] = Counter()
    alarms = 0
    for draw in range(args.batches):
        order = rng.permutation(len(pool))
        reference = Reference.build(pool.subset(order[: len(validation)]), n_classes, seed=draw)
        batch = pool.subset(order[len(validation) :][: args.batch_size])
        report = compare(reference, batch, alpha=args.alpha)
        alarms += report.drift
        fired.update(name for name, s in report.signals.items() if s.fired)
    return {"alarms": alarms, "rate": alarms / args.batches, "fired": dict(fired)}


def verdict(model: Model, batch: Observations) -> dict[str, Any]:
    if model.reference is None:
        raise ValueError("the model holds no drift reference")
    report = compare(model.reference, batch, class_names=model.classes)
    return report.as_dict()


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The figures without the per-signal details."""
    short = {k: v for k, v in results.items() if not isinstance(v, dict)}
    for key in ("false_alarms_stored_reference", "false_alarms_fresh_reference"):
        short[key] = results[key]
    for key in ("test_part", "hires_image", "hires_hires_image"):
        short[key] = {"drift": results[key]["drift"], "reasons": results[key]["reasons"]}
    return short


if __name__ == "__main__":
    main()
