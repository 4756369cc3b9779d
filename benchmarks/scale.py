"""Scaling benchmark of the Ray engine: products/s of `prodcat predict --engine ray` on one and on
two single-CPU nodes (the scaling ratio), the Ray path against the local engine on the whole
machine, and each Ray worker's peak memory.

    python benchmarks/scale.py --model MODEL_DIR [--n 1000] [--repeats 3] [--json scale.json]

Input: the first N products of ../shared/datasets/fashion-products, as 4 CSV shards in a temporary
folder (photo paths relative to each shard). Every configuration runs `--repeats` times in this
process (the driver); the table gives medians. Clusters are real: `ray start --head` and
`ray start --address` on loopback (prodcat.distributed.local), started before their runs and
stopped after (cluster start is not timed; connecting, reading and the actors' start are).
- end to end: rows / (connect + read + label + write), what a user waits for;
- labelling: rows / (first batch requested to last answer written) (actor start and model load
  included, reading excluded);
- steady: the workers' own rate from each one's first batch to its last, summed over the workers
  (`RayRun.steady_rows_per_s`; the local engine: rows / its labelling, writing excluded): the
  throughput of a long job once every worker is up, which the scaling ratio and the comparison
  with the local engine are about (a job of millions of products pays the start-up once); the
  start-up itself (first batch requested to first answers back) is reported beside it;
- local: the local engine (`Predictor.predict_products` on all cores, what `prodcat predict` runs)
  timed the same way: read + label + write, and label + write.
The load average before and after each run is printed: other work on the machine skews figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fashion-products"
SHARDS = 4


def write_input(folder: Path, n: int) -> Path:
    """The first `n` products (with a photo) as SHARDS CSV files under folder/input."""
    source = folder / "input"
    source.mkdir()
    (source / "images").symlink_to((DATA / "images").resolve())
    with (DATA / "products.csv").open(encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            if (DATA / row["image"]).is_file():
                path = " > ".join(row[c] for c in ("masterCategory", "subCategory", "articleType"))
                rows.append({"id": row["id"], "title": row["title"], "image": row["image"]})
                rows[-1]["category"] = path
            if len(rows) == n:
                break
    per = -(-len(rows) // SHARDS)
    for k in range(SHARDS):
        with (source / f"part-{k}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows[k * per : (k + 1) * per])
    return source


def run_local(
    model_dir: Path, source: Path, out: Path, threads: int | None = None
) -> dict[str, Any]:
    """The local engine; `threads`: its ONNX sessions' threads (None: every core)."""
    if threads is None:
        return _run_local(model_dir, source, out)
    os.environ["PRODCAT_THREADS"] = str(threads)  # read when the sessions open (Model.load)
    try:
        return _run_local(model_dir, source, out)
    finally:
        del os.environ["PRODCAT_THREADS"]


def _run_local(model_dir: Path, source: Path, out: Path) -> dict[str, Any]:
    from prodcat.catalogue import ColumnMapping, load_catalogue
    from prodcat.model.bundle import Model
    from prodcat.model.predictions_file import write_predictions
    from prodcat.model.predictor import Predictor

    started = time.perf_counter()
    model = Model.load(model_dir)
    cat = load_catalogue(source, ColumnMapping(), verify_images=False, require_labels=False)
    labelling = time.perf_counter()
    predictor = Predictor(model)
    answers, first = [], 0.0
    for prepared in predictor.prepare_chunks(cat.products):  # what predict_products runs
        answers += predictor.run(prepared)[0]
        first = first or time.perf_counter()
    answered = time.perf_counter()
    write_predictions(out, answers, cat.products)
    done = time.perf_counter()
    rows = len(cat.products)
    return {
        "rows": rows,
        "end_to_end_per_s": rows / (done - started),
        "labelling_per_s": rows / (done - labelling),
        "steady_per_s": rows / (answered - labelling),
        "first_answer_s": first - labelling,
        "peak_mb": {"local": _peak_mb()},
    }


def run_ray(model_dir: Path, source: Path, out: Path, address: str, workers: int) -> dict:
    from prodcat.catalogue import ColumnMapping
    from prodcat.distributed.predict import PredictOptions, predict_on_ray
    from prodcat.model.predictions_file import parse_target

    started = time.perf_counter()
    run = predict_on_ray(
        model_dir,
        source,
        parse_target(out),
        ColumnMapping(),
        PredictOptions(),
        address=address,
        workers=workers,
        progress=False,
    )
    done = time.perf_counter()
    return {
        "rows": run.rows,
        "end_to_end_per_s": run.rows / (done - started),
        "labelling_per_s": run.rows / run.predict_s,
        "first_answer_s": run.first_answer_s,
        "steady_per_s": run.steady_rows_per_s(),
        "peak_mb": run.peak_mb,
    }


def _peak_mb() -> float:
    from prodcat.distributed.predict import peak_memory_mb

    return peak_memory_mb()


def repeat(name: str, repeats: int, once: Any) -> dict[str, Any]:
    runs = []
    for i in range(repeats):
        load_before = os.getloadavg()[0]
        result = once(i)
        result["load"] = (round(load_before, 2), round(os.getloadavg()[0], 2))
        runs.append(result)
        print(f"  {name} run {i + 1}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return {
        "end_to_end_per_s": statistics.median(r["end_to_end_per_s"] for r in runs),
        "labelling_per_s": statistics.median(r["labelling_per_s"] for r in runs),
        "steady_per_s": statistics.median(r["steady_per_s"] for r in runs),
        "first_answer_s": statistics.median(r["first_answer_s"] for r in runs),
        "peak_mb_per_worker": max(max(r["peak_mb"].values()) for r in runs),
        "load": [r["load"] for r in runs],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from prodcat.distributed.local import local_cluster

    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "n": args.n,
    }
    with tempfile.TemporaryDirectory(prefix="scale-") as temp:
        folder = Path(temp)
        source = write_input(folder, args.n)
        out = folder / "preds.parquet"
        results["local, whole machine"] = repeat(
            "local", args.repeats, lambda i: run_local(args.model, source, out)
        )
        # The ceiling of any scaling here: what a second core gives the local engine itself.
        results["local, 1 thread"] = repeat(
            "local, 1 thread", args.repeats, lambda i: run_local(args.model, source, out, 1)
        )
        plans = [
            ("ray, 1 node x 1 CPU", 1, 1, 1),
            ("ray, 2 nodes x 1 CPU", 2, 1, 2),
            ("ray, 1 node x 2 CPUs (whole machine)", 1, 2, 2),
        ]
        for name, nodes, cpus, workers in plans:
            with local_cluster(folder / "ray", nodes=nodes, cpus_per_node=cpus) as address:
                results[name] = repeat(
                    name,
                    args.repeats,
                    lambda i, a=address, w=workers: run_ray(args.model, source, out, a, w),
                )
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    one, two = results["ray, 1 node x 1 CPU"], results["ray, 2 nodes x 1 CPU"]
    local = results["local, whole machine"]
    whole = results["ray, 1 node x 2 CPUs (whole machine)"]
    print(f"{results['machine']}; {results['n']} products, medians")
    print(
        "| configuration | end to end | labelling | steady | start-up to first answers, s "
        "| peak MB/worker |"
    )
    print("|---|---|---|---|---|---|")
    for name, figures in results.items():
        if isinstance(figures, dict):
            print(
                f"| {name} | {figures['end_to_end_per_s']:.1f} | "
                f"{figures['labelling_per_s']:.1f} | {figures['steady_per_s']:.1f} | "
                f"{figures['first_answer_s']:.1f} | {figures['peak_mb_per_worker']:.0f} |"
            )
    single = results["local, 1 thread"]
    for what in ("steady_per_s", "labelling_per_s", "end_to_end_per_s"):
        print(f"local engine, 2 threads / 1 thread ({what}): {local[what] / single[what]:.2f}")
        print(f"scaling 2 nodes / 1 node ({what}): {two[what] / one[what]:.2f} (target >= 1.7)")
        best = max(whole[what], two[what])
        print(f"ray / local, whole machine ({what}): {best / local[what]:.0%} (target >= 80%)")


if __name__ == "__main__":
    main()
