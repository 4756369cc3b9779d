"""New categories without retraining (issue 17): `prodcat extend` on fashion-products.

The rule for the classes left out (fixed before any result): among the articleTypes with 100
products or more that sit under a single parent, 5 drawn at random with seed 17. A FULL model
(every class with >= 20 training products, the default head) is trained without any of their
products; then each is added with `--shots` examples drawn from its training part (per draw
seed), and the figures are measured on the test part:

- accuracy and top-5 of the added classes' test products (targets: 5 shots >= 80% / top-5 >=
  95%; 20 shots >= 90%), and how many were accepted automatically (must be 0: young classes);
- the old classes' test accuracy before and after (target: drops <= 0.3 points);
- zero-shot: the same classes added by name alone (`--category`), top-5 hit rate;
- the seconds `extend_model` takes (target <= 10 s; features come from the warm cache).

Each figure is given per draw of examples and as the median and range over the draws.

On the VALIDATION part only (what the defaults are picked from):
- `--curve` the trade-off: new-class accuracy against the old classes' drop as the young mass's
  bias moves away from the fitted one (`extension_fit.BIAS_SHIFT` is the point chosen from it);
- `--features` an ablation: the scores the calibration fits (default: all of
  `extension_fit.FEATURES`; `similarity,margin` is the mass before the head's confidence counted);
- `--weights` the photo's share of the prototype similarity (5 shots, draw 0).

    python benchmarks/extend.py --models-dir /tmp/extend-bench --json extend.json \
        --draws 0,1,2,3,4,5,6,7 --curve=-0.5,0,0.5,0.6,0.7,0.8,1,1.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue import Catalogue, ColumnMapping, Product, load_catalogue
from prodcat.catalogue.split import split_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.model import extension_fit
from prodcat.model.bundle import Model
from prodcat.model.extending import extend_model
from prodcat.model.extension import SAMPLE_FILE
from prodcat.taxonomy.tree import format_path
from prodcat.training.train import TrainOptions, train, validation_sample

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)
RULE_SEED = 17
N_LEFT_OUT = 5
MIN_PRODUCTS = 100


def left_out_classes(cat: Catalogue) -> list[str]:
    """The stated rule (see the module docstring): leaf names."""
    counts = Counter(p.label[-1] for p in cat.products if p.label)
    parents: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for p in cat.products:
        if p.label:
            parents[p.label[-1]].add(p.label[:-1])
    eligible = sorted(a for a, n in counts.items() if n >= MIN_PRODUCTS and len(parents[a]) == 1)
    rng = np.random.default_rng(RULE_SEED)
    return sorted(rng.choice(eligible, N_LEFT_OUT, replace=False).tolist())


def base_model(cat: Catalogue, held: list[str], folder: Path, cache: FeatureCache) -> Model:
    """The FULL model without the left-out classes (trained once, then reused from `folder`)."""
    kept = replace(cat, products=[p for p in cat.products if p.label and p.label[-1] not in held])
    if not (folder / "model.json").exists():
        started = time.perf_counter()
        result = train(
            kept, TrainOptions(min_class_count=20, calibration_folds=0), cache=cache, progress=False
        )
        result.model.save(folder)
        print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    model = Model.load(folder)
    if model.extension_sample is None:  # a model trained before the sample was kept
        validation = split_catalogue([p for p in kept.products if p.label])["validation"]
        inputs, _ = model.encode(validation, cache, progress=False)
        model.extension_sample = validation_sample(model, validation, inputs)
        model.extension_sample.save(folder / SAMPLE_FILE)
    return model


def accuracy(model: Model, products: list[Product], cache: FeatureCache) -> dict[str, Any]:
    predictions = model.predict(products, cache)
    truth = [format_path(p.label or ()) for p in products]
    right = [p.category == t for p, t in zip(predictions, truth, strict=True)]
    top5 = [t in [c for c, _ in p.top[:5]] for p, t in zip(predictions, truth, strict=True)]
    accepted = sum(p.decision == "accept" for p in predictions)
    return {
        "n": len(products),
        "accuracy": float(np.mean(right)) if right else None,
        "top5": float(np.mean(top5)) if top5 else None,
        "accepted": int(accepted),
        "unknown": int(sum(p.decision == "unknown" for p in predictions)),
    }


def draw_examples(
    train_part: list[Product], held: list[str], shots: int, seed: int
) -> list[Product]:
    rng = np.random.default_rng(seed)
    out = []
    for leaf in held:
        members = [p for p in train_part if p.label and p.label[-1] == leaf]
        out += [members[i] for i in sorted(rng.choice(len(members), shots, replace=False))]
    return out


def run_case(
    model: Model,
    examples: list[Product],
    categories: list[str],
    new: list[Product],
    old: list[Product],
    cache: FeatureCache,
    photo_weight: float,
) -> dict[str, Any]:
    started = time.perf_counter()
    result = extend_model(
        model, examples, categories=categories, cache=cache, photo_weight=photo_weight
    )
    seconds = time.perf_counter() - started
    return {
        "extend_seconds": seconds,
        "new": accuracy(result.model, new, cache),
        "old": accuracy(result.model, old, cache),
        "calibration": result.model.extension.info.get("calibration")
        if result.model.extension
        else None,
        "evidence": result.evidence,
    }


def trade_off_curve(
    model: Model,
    train_part: list[Product],
    held: list[str],
    products: list[Product],
    draws: list[int],
    shifts: list[float],
    cache: FeatureCache,
) -> dict[str, Any]:
    """On `products` (the validation part): per shots, shift and draw, the new classes'
    accuracy and the old classes' drop with the young mass's bias moved by `shift` from the
    fitted one and no per-class cap; then the chosen point (`BIAS_SHIFT` and the per-class cap
    `FLIP_BUDGET`, as `extend` sets them) under "chosen". The category is the merged output's
    top class, as `Model.predict` gives it."""
    inputs, _ = model.encode(products, cache, progress=False)
    base = model.calibrate(model.head.decision_logits(inputs), inputs)
    truth = np.array([format_path(p.label or ()) for p in products])
    new = np.array([(p.label or ("",))[-1] in held for p in products])
    before = np.mean(np.array(model.classes)[base.argmax(axis=1)][~new] == truth[~new])
    out: dict[str, Any] = {}
    for shots in (5, 20):
        rows: dict[str, list[dict[str, float]]] = {str(s): [] for s in shifts}
        rows["chosen"] = []
        for draw in draws:
            ext = extend_model(model, draw_examples(train_part, held, shots, draw), cache=cache)
            extension = ext.model.extension
            assert extension is not None
            chosen, cap = extension.bias, extension.class_bias
            settings = [
                (str(s), chosen - extension_fit.BIAS_SHIFT + s, np.zeros(0)) for s in shifts
            ]
            for name, bias, class_bias in [*settings, ("chosen", chosen, cap)]:
                extension.bias, extension.class_bias = bias, class_bias
                answer = np.array(ext.model.classes)[extension.merge(base, inputs).argmax(axis=1)]
                rows[name].append(
                    {
                        "new": float(np.mean(answer[new] == truth[new])),
                        "old_drop": float(before - np.mean(answer[~new] == truth[~new])),
                    }
                )
        out[f"shots_{shots}"] = {name: _spread(r) for name, r in rows.items()}
        for name, summary in out[f"shots_{shots}"].items():
            print(f"validation shots={shots} shift={name}: {summary}", flush=True)
    return out


def _spread(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Median and range of each figure over the draws."""
    return {
        key: {
            "median": round(statistics.median(r[key] for r in rows), 4),
            "min": round(min(r[key] for r in rows), 4),
            "max": round(max(r[key] for r in rows), 4),
        }
        for key in rows[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--models-dir", type=Path, default=Path("extend-bench"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--shots", default="5,20")
    parser.add_argument("--draws", default="0,1,2,3,4,5,6,7")
    parser.add_argument("--photo-weight", type=float, default=0.5)
    parser.add_argument("--weights", default="", help="e.g. 0,0.25,0.5,0.75,1 (on validation)")
    parser.add_argument("--curve", default="", help="bias shifts, e.g. -0.5,0,0.7,1 (validation)")
    parser.add_argument("--features", default="", help="e.g. similarity,margin (an ablation)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.features:
        extension_fit.PROTOTYPE_FEATURES = tuple(args.features.split(","))
    csv_path = args.data / "products.csv"
    if not csv_path.exists():
        sys.exit(f"{csv_path} not found; pass --data PATH to the fashion-products folder")
    cat = load_catalogue(csv_path, FASHION, verify_images=False, progress=False)
    cache = FeatureCache(args.cache_dir)
    held = left_out_classes(cat)
    print(f"left out: {held}", flush=True)
    model = base_model(cat, held, args.models_dir / "model", cache)
    parts = split_catalogue([p for p in cat.products if p.label])
    known = set(model.classes)

    def of(part: str, new: bool) -> list[Product]:
        if new:
            return [p for p in parts[part] if p.label and p.label[-1] in held]
        return [p for p in parts[part] if format_path(p.label or ()) in known]

    report: dict[str, Any] = {"left_out": held, "rule": f"seed {RULE_SEED}, >= {MIN_PRODUCTS}"}
    report["features"] = list(extension_fit.PROTOTYPE_FEATURES)
    report["bias_shift"] = extension_fit.BIAS_SHIFT
    draws = [int(d) for d in args.draws.split(",")]
    if args.curve:
        shifts = [float(x) for x in args.curve.split(",")]
        report["curve_validation"] = trade_off_curve(
            model,
            parts["train"],
            held,
            of("validation", True) + of("validation", False),
            draws,
            shifts,
            cache,
        )
        save(report, args.json)
    report["paths"] = sorted({format_path(p.label or ()) for p in of("test", True)})
    before = accuracy(model, of("test", False), cache)
    report["old_before"] = before
    print(f"old classes before: {before}", flush=True)
    for shots in [int(s) for s in args.shots.split(",")]:
        cases = []
        for draw in draws:
            examples = draw_examples(parts["train"], held, shots, draw)
            case = run_case(
                model, examples, [], of("test", True), of("test", False), cache, args.photo_weight
            )
            case["old_drop"] = before["accuracy"] - case["old"]["accuracy"]
            cases.append(case)
            print(f"test shots={shots} draw={draw}: {_line(case)}", flush=True)
        report[f"shots_{shots}"] = {"draws": cases, "median": _medians(cases)}
        save(report, args.json)
    zero = run_case(model, [], report["paths"], of("test", True), of("test", False), cache, 0.5)
    zero["old_drop"] = before["accuracy"] - zero["old"]["accuracy"]
    report["zero_shot"] = zero
    print(f"zero-shot: {_line(zero)}", flush=True)
    save(report, args.json)
    if args.weights:
        report["weights_validation"] = {}
        base_val = accuracy(model, of("validation", False), cache)
        for w in [float(x) for x in args.weights.split(",")]:
            examples = draw_examples(parts["train"], held, 5, 0)
            case = run_case(
                model, examples, [], of("validation", True), of("validation", False), cache, w
            )
            case["old_drop"] = base_val["accuracy"] - case["old"]["accuracy"]
            report["weights_validation"][w] = case
            print(f"validation w={w}: {_line(case)}", flush=True)
            save(report, args.json)
    save(report, args.json)


def save(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=1, default=str))


def _line(case: dict[str, Any]) -> str:
    new, old = case["new"], case["old"]
    return (
        f"new acc {new['accuracy']:.4f} top5 {new['top5']:.4f} accepted {new['accepted']} "
        f"(n {new['n']}); old acc {old['accuracy']:.4f} drop {case['old_drop'] * 100:.2f} pt; "
        f"extend {case['extend_seconds']:.1f} s"
    )


def _medians(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over the draws."""
    return _spread(
        [
            {
                "new_accuracy": c["new"]["accuracy"],
                "new_top5": c["new"]["top5"],
                "old_drop": c["old_drop"],
                "extend_seconds": c["extend_seconds"],
                "new_accepted": c["new"]["accepted"],
            }
            for c in cases
        ]
    )


if __name__ == "__main__":
    main()
