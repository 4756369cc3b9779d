"""Encoding speed on the full benchmark catalogue (../shared/datasets/fashion-products).

Measures, each in a fresh child process (so peak memory is per measurement) with a cold cache in a
temporary folder: images/s for each image encoder including JPEG decode and preprocessing, texts/s
for MiniLM, then products/s when everything comes from a warm cache; medians of --repeats runs.
The ONNX export happens once before timing (it is a one-off per machine, reported apart).

    python benchmarks/encode.py [--data ../shared/datasets/fashion-products] [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table

from prodcat.catalogue import ColumnMapping, load_catalogue
from prodcat.encoders.registry import get_encoder
from prodcat.features.cache import FeatureCache
from prodcat.features.encode import encode_products

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)


def _measure(job: dict[str, Any], queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Child process: load the catalogue, encode a slice, report seconds and peak memory."""
    cat = load_catalogue(job["data"] / "products.csv", FASHION, verify_images=False)
    products = cat.products[: job["n"]]
    encoder = get_encoder(job["encoder"], onnx_dir=job["onnx_dir"])
    cache = FeatureCache(job["cache"])
    start = time.perf_counter()
    feats = encode_products(products, encoder, cache, progress=False)
    seconds = time.perf_counter() - start
    peak_mb = _peak_mb()
    queue.put(
        {"seconds": seconds, "n": len(feats.ids), "computed": feats.n_computed, "peak_mb": peak_mb}
    )


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: the high-water mark of this process alone)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(job: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_measure, args=(job, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--images", type=int, default=2000, help="photos per cold image run")
    parser.add_argument("--texts", type=int, default=0, help="titles per cold text run (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    data = args.data.resolve()
    if not (data / "products.csv").exists():
        sys.exit(f"{data}/products.csv not found; pass --data PATH to the fashion-products folder")
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="prodcat-bench-"))
    onnx_dir = work / "onnx"

    # Export every ONNX model once, outside the timings.
    for name in ("effnet-lite0", "effnet-lite2", "minilm"):
        start = time.perf_counter()
        encoder = get_encoder(name, onnx_dir=onnx_dir)
        encoder.encode(["warm up"] if name == "minilm" else [Image.new("RGB", (60, 80), "white")])
        console.print(f"export {name}: {time.perf_counter() - start:.1f} s")

    n_all = len(load_catalogue(data / "products.csv", FASHION, verify_images=False).products)
    rows: list[dict[str, Any]] = []
    plan = [
        ("effnet-lite0", "cold", args.images),
        ("effnet-lite2", "cold", args.images // 2),
        ("minilm", "cold", args.texts or n_all),
    ]
    for encoder, mode, n in plan:
        runs = []
        for r in range(args.repeats):
            job = {
                "data": data,
                "n": n,
                "encoder": encoder,
                "onnx_dir": onnx_dir,
                "cache": work / f"cache-{encoder}-{r}",
            }
            runs.append(_run(job))
            console.print(f"{encoder} {mode} run {r + 1}: {runs[-1]}")
        rows.append(_row(encoder, mode, runs))

    # Warm cache: fill it with every product once (not timed), then read it back.
    for encoder in ("effnet-lite0", "minilm"):
        warm = work / f"warm-{encoder}"
        _run({"data": data, "n": n_all, "encoder": encoder, "onnx_dir": onnx_dir, "cache": warm})
        runs = [
            _run(
                {"data": data, "n": n_all, "encoder": encoder, "onnx_dir": onnx_dir, "cache": warm}
            )
            for _ in range(args.repeats)
        ]
        rows.append(_row(encoder, "warm", runs))

    table = Table(title=_machine(), title_justify="left")
    for column in ("encoder", "cache", "items", "items/s (median)", "min-max", "peak MB"):
        table.add_column(column, justify="left" if column in ("encoder", "cache") else "right")
    for row in rows:
        table.add_row(
            row["encoder"],
            row["mode"],
            f"{row['n']:,}",
            f"{row['rate']:,.0f}",
            f"{row['rate_min']:,.0f}-{row['rate_max']:,.0f}",
            f"{row['peak_mb']:,.0f}",
        )
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2))


def _row(encoder: str, mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["n"] / r["seconds"] for r in runs]
    return {
        "encoder": encoder,
        "mode": mode,
        "n": runs[0]["n"],
        "rate": statistics.median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
    }


def _machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
