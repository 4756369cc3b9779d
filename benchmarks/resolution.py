"""Resolution benchmark: the same products from their 60x80 thumbnails and their sharp photos.

    python benchmarks/resolution.py --model MODEL_DIR [--model ...] [--fit none,model,120]
        [--json resolution.json]

The products: ../shared/datasets/fashion-hires (616 products of the store that are not in
fashion-products, each with its thumbnail `image` and its full-resolution photo `hires_image`,
at most 480 x 640). Each model answers every product from the thumbnail and from the sharp photo,
through the feature cache (the decoding and preprocessing of the in-memory path that `prodcat
predict` and the API run, so each photo is encoded once), from the photo alone and from photo +
title (when the model reads titles).

`--fit` names the photo sides tried: "none" (every photo at its own resolution, the behaviour
before the model recorded its photo side), "model" (the side the model recorded, or 80 for a
model without a record: the side of the catalogue's thumbnails), or a number of pixels.

Figures per setting: accuracy (products whose true class the model knows), accuracy of the
first taxonomy level (every product whose first level the model knows: the top leaf's first
level, and the most probable first level, `level1_best_*`), and how often the two
resolutions agree on the top category. Each is reported for the whole set and for its two
halves by a hash of the product id: "dev" to choose a setting on, "check" to confirm it on. Use
the validation part of fashion-products for anything else (this set is a shifted batch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue import ColumnMapping, Product, load_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.heads.inputs import restrict
from prodcat.model.bundle import Model
from prodcat.taxonomy.probabilities import node_probabilities
from prodcat.taxonomy.tree import format_path, parse_path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fashion-hires"
LEVELS = ("masterCategory", "subCategory", "articleType")
THUMBNAIL_SIDE = 80  # fashion-products' thumbnails are 60 x 80


def load_pairs(data: Path = DATA) -> tuple[list[Product], list[Product]]:
    """(thumbnail products, sharp-photo products), the same ids in the same order."""
    parts = []
    for column in ("image", "hires_image"):
        mapping = ColumnMapping(image_column=column, label_columns=LEVELS)
        parts.append(load_catalogue(data / "products.csv", mapping, verify_images=False).products)
    sharp = {p.id: p for p in parts[1] if p.image is not None}
    thumbs = [p for p in parts[0] if p.image is not None and p.id in sharp]
    return thumbs, [sharp[p.id] for p in thumbs]


def half(product_id: str) -> str:
    """'dev' or 'check', by a hash of the id (stable, independent of the row order)."""
    return "dev" if hashlib.sha256(product_id.encode()).digest()[0] % 2 == 0 else "check"


def answers(
    model: Model,
    products: list[Product],
    fit: int | None,
    modalities: set[str] | None,
    cache: FeatureCache,
) -> tuple[list[str], list[str]]:
    """(top category, most probable first level) per product, with the model's photo side set to
    `fit`. The first level is the one with the most probability summed over its leaves, the
    answer at that depth (`Model.predict`'s back-off reads the same sums), which the top leaf's
    own first level can miss. Through the feature cache (the same decoding and preprocessing as
    `Predictor`; fitted photos have keys of their own), so each photo is encoded once for every
    model and case."""
    model.photo_side = fit
    inputs, _ = model.encode(products, cache, progress=False)
    inputs = restrict(inputs, modalities)
    proba = model.calibrate(model.head.decision_logits(inputs), inputs)
    classes = model.classes
    nodes, node_proba = node_probabilities(proba, classes)
    firsts = sorted({parse_path(c)[0] for c in classes})
    columns = [nodes.index(f) for f in firsts]
    tops = [classes[k] for k in np.argmax(proba, axis=1)]
    return tops, [firsts[k] for k in np.argmax(node_proba[:, columns], axis=1)]


def figures(
    truth: list[str],
    thumb: tuple[list[str], list[str]],
    sharp: tuple[list[str], list[str]],
    classes: set[str],
    ids: list[str],
) -> dict[str, Any]:
    """Accuracies at both resolutions, first-level accuracies (of the top leaf, and the most
    probable first level) and agreement, per half; `thumb`, `sharp`: `answers`' pair."""
    (thumb, thumb_first), (sharp, sharp_first) = thumb, sharp
    firsts = {parse_path(c)[0] for c in classes}
    out: dict[str, Any] = {}
    for name in ("all", "dev", "check"):
        rows = [i for i, pid in enumerate(ids) if name == "all" or half(pid) == name]
        known = [i for i in rows if truth[i] in classes]
        level1 = [i for i in rows if parse_path(truth[i])[0] in firsts]

        def share(hits: int, total: int) -> float:
            return round(100 * hits / total, 2) if total else float("nan")

        def first(path: str) -> str:
            return parse_path(path)[0]

        out[name] = {
            "products": len(rows),
            "known_class": len(known),
            "acc_thumb": share(sum(thumb[i] == truth[i] for i in known), len(known)),
            "acc_sharp": share(sum(sharp[i] == truth[i] for i in known), len(known)),
            "level1_thumb": share(
                sum(first(thumb[i]) == first(truth[i]) for i in level1), len(level1)
            ),
            "level1_sharp": share(
                sum(first(sharp[i]) == first(truth[i]) for i in level1), len(level1)
            ),
            "level1_best_thumb": share(
                sum(thumb_first[i] == first(truth[i]) for i in level1), len(level1)
            ),
            "level1_best_sharp": share(
                sum(sharp_first[i] == first(truth[i]) for i in level1), len(level1)
            ),
            "agree": share(sum(thumb[i] == sharp[i] for i in rows), len(rows)),
        }
        out[name]["gap"] = round(out[name]["acc_thumb"] - out[name]["acc_sharp"], 2)
    return out


def reverse_case(
    thumbs: list[Product], sharps: list[Product], cache: FeatureCache, folds: int = 5
) -> dict[str, Any]:
    """A photo model trained on sharp photos, answering thumbnails: fashion-hires' own sharp
    photos are the larger-photo training set (the only real one here), 5-fold cross-validated by
    product over its articleTypes with >= 10 products, a logistic regression on the frozen
    Lite0 features (the image head's kind). Trained on (a) the sharp photos alone, (b) the sharp
    photos plus each photo brought down to 80 px (multi-resolution augmentation through the
    cache); each answers the held-out products' thumbnails and sharp photos."""
    from collections import Counter

    from sklearn.linear_model import LogisticRegression

    from prodcat.encoders.registry import get_encoder
    from prodcat.features.encode import encode_products

    counts = Counter(format_path(p.label or ()) for p in thumbs)
    keep = [i for i, p in enumerate(thumbs) if counts[format_path(p.label or ())] >= 10]
    labels = np.array([format_path(thumbs[i].label or ()) for i in keep])

    def features(products: list[Product], fit: int | None) -> np.ndarray:
        encoder = get_encoder("effnet-lite0")
        encoder.fit_side = fit  # type: ignore[attr-defined]
        found = encode_products([products[i] for i in keep], encoder, cache, progress=False)
        return found.lookup([products[i].id for i in keep])[1]

    sharp, sharp80, thumb = features(sharps, None), features(sharps, 80), features(thumbs, None)
    fold = np.array([int(hashlib.sha256(thumbs[i].id.encode()).hexdigest(), 16) % folds
                     for i in keep])  # fmt: skip
    out: dict[str, Any] = {"products": len(keep), "classes": len(set(labels))}
    for name, train_sets in (("sharp", [sharp]), ("sharp+80px", [sharp, sharp80])):
        hits = {"thumb": 0, "sharp": 0}
        for k in range(folds):
            train, test = fold != k, fold == k
            rows = np.vstack([f[train] for f in train_sets])
            y = np.concatenate([labels[train]] * len(train_sets))
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(rows, y)
            hits["thumb"] += int((clf.predict(thumb[test]) == labels[test]).sum())
            hits["sharp"] += int((clf.predict(sharp[test]) == labels[test]).sum())
        out[name] = {k: round(100 * v / len(keep), 2) for k, v in hits.items()}
    return out


def fit_value(name: str, model: Model, recorded: int | None) -> int | None:
    if name == "none":
        return None
    if name == "model":
        return recorded if recorded is not None else THUMBNAIL_SIDE
    return int(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--reverse", action="store_true", help="also the reverse case")
    parser.add_argument("--fit", default="none,model", help="comma-separated: none, model, PX")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default: the user's)")
    args = parser.parse_args()
    cache = FeatureCache(args.cache_dir)
    thumbs, sharps = load_pairs(args.data)
    ids = [p.id for p in thumbs]
    truth = [format_path(p.label or ()) for p in thumbs]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "products": len(ids),
        "load_average_before": os.getloadavg(),
        "results": [],
    }
    for folder in args.model:
        model = Model.load(folder)
        recorded = model.photo_side
        classes = set(model.classes)
        cases: list[tuple[str, set[str] | None]] = [("photo", {"image"})]
        if model.text_encoder:
            cases.append(("photo+title", None))
        for fit_name in args.fit.split(","):
            fit = fit_value(fit_name, model, recorded)
            for case, modalities in cases:
                started = time.perf_counter()
                thumb = answers(model, thumbs, fit, modalities, cache)
                sharp = answers(model, sharps, fit, modalities, cache)
                result = {
                    "model": str(folder),
                    "recorded_photo_side": recorded,
                    "fit": fit_name,
                    "fit_side": fit,
                    "case": case,
                    "seconds": round(time.perf_counter() - started, 1),
                    **figures(truth, thumb, sharp, classes, ids),
                }
                report["results"].append(result)
                print(json.dumps(result), flush=True)
        model.photo_side = recorded
    if args.reverse:
        report["reverse"] = reverse_case(thumbs, sharps, cache)
        print(json.dumps({"reverse": report["reverse"]}), flush=True)
    report["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
