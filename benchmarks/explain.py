"""Explanations on real data: are the words faithful, and what do explanations cost in the API?

Takes a model trained by `prodcat train` on the fashion catalogue (it holds its neighbour index,
`neighbours/`), then:

1. **Deletion test** on `--part` (validation by default: the word method is chosen there): for
   up to `--n` products (a seeded draw) whose title has more than 2 distinct words, remove the
   explanation's top 2 words, and (3 draws) 2 random words, and count how often the answer
   changes; for each word method ("occlusion", "linear").
2. **Cost in the API**, for each word method: the REST app in process (`TestClient`, no
   network), `--latency` products of the test part as single multipart requests, each sent with
   explain=false and with explain=true in alternation (the order flips every product); per
   product the difference of
   the two total times, and of the model's own time (`head_ms`, where explanations are computed):
   medians. Then the same products in batches of 32 through /v1/predict/batch (with and without,
   in alternation): the median time per product.
3. **Index size**: the model's `neighbours/` folder.

    prodcat train ../shared/datasets/fashion-products/products.csv \\
        --label-columns masterCategory,subCategory,articleType --min-class-count 20 --out FULL
    python benchmarks/explain.py --model FULL --json explain.json
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue import ColumnMapping, Product, load_catalogue
from prodcat.catalogue.split import split_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.model import explain as ex
from prodcat.model.bundle import Model
from prodcat.model.neighbours import INDEX_DIR
from prodcat.taxonomy.tree import format_path

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a model from prodcat train")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--part", choices=("validation", "test"), default="validation")
    parser.add_argument("--n", type=int, default=2000, help="products in the deletion test")
    parser.add_argument("--latency", type=int, default=200, help="products timed in the API")
    parser.add_argument("--methods", default="occlusion,linear", help="deletion test's")
    parser.add_argument("--api-methods", default="linear,occlusion", help="timed in the API")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    model = Model.load(args.model)
    if model.neighbours is None:
        raise SystemExit(f"{args.model} holds no neighbour index: retrain it with prodcat train")
    # Photos verified as `prodcat train` does: the split groups by their hashes.
    catalogue = load_catalogue(args.data / "products.csv", FASHION)
    parts = split_catalogue([p for p in catalogue.products if p.label])
    known = set(model.classes)
    figures: dict[str, Any] = {"model": str(args.model), "part": args.part}
    figures["index"] = index_size(args.model, len(model.neighbours))
    print(f"index: {figures['index']}")

    chosen = _draw([p for p in parts[args.part] if _label(p) in known], args.n, args.seed)
    inputs, _ = model.encode(chosen, FeatureCache(args.cache_dir), progress=False)
    encode_titles = ex.model_title_encoding(model)
    figures["deletion"] = {}
    for method in args.methods.split(","):
        started = time.perf_counter()
        result = ex.deletion_test(model, inputs, encode_titles, method=method, seed=args.seed)
        row = {**result.as_dict(), "seconds": round(time.perf_counter() - started, 1)}
        figures["deletion"][method] = row
        print(f"deletion test, {method}: {row}")

    timed = _draw([p for p in parts["test"] if _label(p) in known], args.latency, args.seed + 1)
    figures["api"] = {}
    for method in args.api_methods.split(","):
        ex.WORD_METHOD = method  # what the API's explanations use, in this process
        figures["api"][method] = api_cost(args.model, timed)
        print(f"API cost, words by {method}: {json.dumps(figures['api'][method], indent=1)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def index_size(model_dir: Path, n: int) -> dict[str, Any]:
    files = {p.name: p.stat().st_size for p in (model_dir / INDEX_DIR).iterdir()}
    return {"products": n, "bytes": files, "total_mb": round(sum(files.values()) / 1e6, 2)}


def api_cost(model_dir: Path, products: list[Product]) -> dict[str, Any]:
    """Paired single-product requests with and without explain=true, then batches."""
    from fastapi.testclient import TestClient

    from prodcat.serving import Settings, create_app

    photos = {p.id: p.image.read_bytes() if p.image else b"" for p in products}
    single: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with TestClient(create_app(Settings(model_dir=model_dir))) as api:
        for i, product in enumerate(products[:10]):  # warm-up: sessions, caches
            _single(api, product, photos[product.id], bool(i % 2))
        for i, product in enumerate(products):
            order = (False, True) if i % 2 == 0 else (True, False)
            for explain in order:
                single[explain].append(_single(api, product, photos[product.id], explain))
        batches: dict[bool, list[float]] = {False: [], True: []}
        size = min(BATCH, len(products))
        for k, start in enumerate(range(0, len(products) - size + 1, size)):
            for explain in (False, True) if k % 2 == 0 else (True, False):
                chunk = products[start : start + size]
                batches[explain].append(_batch(api, chunk, photos, explain))
    return {
        "products": len(products),
        "single_total_ms": _paired([t for t, _ in single[False]], [t for t, _ in single[True]]),
        "single_model_ms": _paired([h for _, h in single[False]], [h for _, h in single[True]]),
        "batch_ms_per_product": {
            "off": round(statistics.median(batches[False]), 3),
            "on": round(statistics.median(batches[True]), 3),
            "added": round(statistics.median(batches[True]) - statistics.median(batches[False]), 3),
        },
    }


def _single(api: Any, product: Product, photo: bytes, explain: bool) -> tuple[float, float]:
    """(wall ms of the request, the model's head_ms)."""
    started = time.perf_counter()
    response = api.post(
        f"/v1/predict?explain={'true' if explain else 'false'}",
        data={"title": product.text, "id": product.id},
        files={"image": ("photo.jpg", photo)} if photo else None,
    )
    wall = (time.perf_counter() - started) * 1000
    body = response.json()
    assert response.status_code == 200, body
    assert (body["explanation"] is not None) == explain
    return wall, float(body["timings"]["head_ms"])


def _batch(api: Any, products: list[Product], photos: dict[str, bytes], explain: bool) -> float:
    items = [
        {"id": p.id, "title": p.text, "image_base64": base64.b64encode(photos[p.id]).decode()}
        for p in products
    ]
    started = time.perf_counter()
    response = api.post(
        f"/v1/predict/batch?explain={'true' if explain else 'false'}", json={"items": items}
    )
    assert response.status_code == 200 and response.json()["n_errors"] == 0
    return (time.perf_counter() - started) * 1000 / len(products)


def _paired(off: list[float], on: list[float]) -> dict[str, float]:
    added = [b - a for a, b in zip(off, on, strict=True)]
    return {
        "off_median": round(statistics.median(off), 3),
        "on_median": round(statistics.median(on), 3),
        "added_median": round(statistics.median(added), 3),
        "added_p90": round(float(np.quantile(added, 0.9)), 3),
    }


def _draw(products: list[Product], n: int, seed: int) -> list[Product]:
    if len(products) <= n:
        return products
    picked = np.random.default_rng(seed).choice(len(products), n, replace=False)
    return [products[i] for i in sorted(picked)]


def _label(product: Product) -> str:
    return format_path(product.label or ())


if __name__ == "__main__":
    main()
