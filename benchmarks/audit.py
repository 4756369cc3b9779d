"""The label audit on a real catalogue: planted noise found, real flags to inspect, time, memory.

In a copy of the catalogue (in memory; the files are never touched) a share of the labels is
flipped, seeded (`prodcat.audit.noise`: half to a sibling class, half to any class); the audit
must flag >= 85% of them (recall) and >= 75% of its top N flags must be flipped products
(precision at N = the number flipped). Both rankings (self-confidence, normalized margin) are
measured from the same out-of-fold probabilities. The clean catalogue's audit gives the real
flags: a seeded sample of them is written for inspection by eye.

    python benchmarks/audit.py ../shared/datasets/fashion-products/products.csv \\
        --label-columns masterCategory,subCategory,articleType --rates 0.02,0.05 \\
        --inspect 50 --out /tmp/audit-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from prodcat.audit import AuditOptions, AuditResult, run_audit
from prodcat.audit.issues import RANKINGS, label_issues
from prodcat.audit.noise import plant_noise
from prodcat.catalogue import Catalogue, ColumnMapping, load_catalogue
from prodcat.encoders.registry import get_encoder
from prodcat.features.cache import FeatureCache


def planted(catalogue: Catalogue, rate: float, cache: FeatureCache, seed: int) -> dict:
    products, flipped = plant_noise(catalogue.products, rate, seed=seed)
    start = time.perf_counter()
    result = run_audit(products, cache, AuditOptions(seed=seed, progress=False))
    seconds = time.perf_counter() - start
    figures = {"rate": rate, "n_flipped": len(flipped), "seconds": round(seconds, 1)}
    for rank_by in RANKINGS:
        figures[rank_by] = scores(result, set(flipped), rank_by)
    return figures


def scores(result: AuditResult, flipped: set[str], rank_by: str) -> dict:
    """Recall of every flag, precision of the top N (N = number flipped), for one ranking."""
    assert result.y is not None and result.proba is not None
    found = label_issues(result.y, result.proba, result.classes, rank_by=rank_by)
    flagged = [result.ids[i] for i in found.rows]
    n = len(flipped)
    return {
        "n_flags": len(flagged),
        "recall": round(len(flipped & set(flagged)) / n, 4),
        "precision_at_n": round(len(flipped & set(flagged[:n])) / n, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogue", type=Path)
    parser.add_argument("--label-columns", default="masterCategory,subCategory,articleType")
    parser.add_argument("--rates", default="0.02,0.05")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inspect", type=int, default=50, help="real flags sampled to inspect")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("audit-bench"))
    args = parser.parse_args()
    cache = FeatureCache(args.cache_dir)
    mapping = ColumnMapping(label_columns=tuple(args.label_columns.split(",")))
    store = cache.store(get_encoder("effnet-lite0").version)
    start = time.perf_counter()
    catalogue = load_catalogue(args.catalogue, mapping, progress=False, decoded=store.__contains__)
    load_seconds = time.perf_counter() - start
    clean = run_audit(catalogue, cache, AuditOptions(seed=args.seed, progress=False))
    report = {
        "n_products": clean.n_products,
        "load_seconds": round(load_seconds, 1),
        "clean": {
            "seconds": clean.seconds,
            "n_issues": len(clean.issues),
            "estimated_error_rate": clean.estimated_error_rate,
            "out_of_fold_accuracy": clean.out_of_fold_accuracy,
            "n_duplicates": len(clean.duplicates),
        },
        "planted": [planted(catalogue, float(r), cache, args.seed) for r in args.rates.split(",")],
    }
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(report, indent=2))
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(clean.issues), size=min(args.inspect, len(clean.issues)), replace=False)
    rows = [clean.issues[i] for i in sorted(sample)]
    (args.out / "inspect.json").write_text(
        json.dumps([{**s.as_json(), "title": s.title, "image": s.image} for s in rows], indent=1)
    )
    (args.out / "audit.json").write_text(json.dumps(clean.as_json(), indent=1))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
