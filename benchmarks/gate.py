"""The gate on real data: tasks SELECT, OOC and MISSING of ../shared/docs/BENCHMARK.md.

For each task set (T10: the 10 largest articleTypes; FULL: every class with >= 20 training
products), trains the photo + title fusion model on the grouped 80/10/10 split (the gate's
temperatures and thresholds are fitted on validation inside `train`), then on the test part:

- SELECT: coverage and accuracy of accepted products at the validation-chosen threshold for the
  target accuracy (0.995), with and without the `unknown` flag; ECE before / after calibration;
  the true class in the top 3 of products sent to review.
- OOC: every test product of an articleType the model does not have is out of class; AUROC and
  share flagged at 95% in-class pass for the gate's score, the prototype's all-zero rule and
  max-softmax (for T10; FULL has few left-out classes); and which out-of-class articleTypes
  pass at that point, with what the model called them (`out_of_class_passed` in the JSON).
- MISSING: the same model shown only the photo, or only the title.

Also the saved model's size and the gate's cost per product (OOD score + decision), median of
several single-product calls; the certificate behind the thresholds (guaranteed accepted
accuracy, calibration products, delta, classes never accepted) and the seconds spent
cross-fitting; with `--other-data`, the same model scored on every labelled product of another
catalogue with the same columns (fashion-hires: an older season, its own labelling habits).

    python benchmarks/gate.py --tasks T10,FULL --cache-dir /tmp/pc-exp --json gate.json
    python benchmarks/gate.py --tasks T10 --seeds 0,1,2 --json t10.json \\
        --other-data ../shared/datasets/fashion-hires
    python benchmarks/gate.py --tasks T10 --image-size 160 --fine-tune-whole 4 --models-dir M

(`--models-dir`: a model saved there by an earlier run, or by `prodcat train` with the same
options, is reused and only its gate refitted.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from prodcat.catalogue import Catalogue, ColumnMapping, load_catalogue
from prodcat.catalogue.split import split_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.gate.gate import class_indices
from prodcat.heads.inputs import restrict
from prodcat.model.bundle import Model
from prodcat.training.metrics import evaluate_products
from prodcat.training.train import (
    TrainOptions,
    TrainResult,
    attach_gate,
    cross_fitted_calibration,
    train,
)

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)
TASKS = {"T10": {"top_classes": 10}, "FULL": {"min_class_count": 20}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--tasks", default="T10,FULL")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("--calibration-folds", type=int, default=5, help="0: validation only")
    parser.add_argument(
        "--other-data", type=Path, help="also score each model on this catalogue's products"
    )
    parser.add_argument("--other-image-column", default="image")
    parser.add_argument("--target-accuracy", type=float, default=0.995)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="photo network input px")
    parser.add_argument(
        "--fine-tune-whole",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="fine-tune the whole photo network for this many epochs first (0: frozen)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="save each task's model here; if one is there already, reuse its head and refit "
        "only the gate (same split, same classes)",
    )
    args = parser.parse_args()
    csv_path = args.data / "products.csv"
    if not csv_path.exists():
        sys.exit(f"{csv_path} not found; pass --data PATH to the fashion-products folder")
    console = Console()
    cat = load_catalogue(csv_path, FASHION, verify_images=False, progress=False)
    cache = FeatureCache(args.cache_dir)
    other = None
    if args.other_data is not None:
        mapping = ColumnMapping(
            label_column=None,
            label_columns=FASHION.label_columns,
            image_column=args.other_image_column,
        )
        other = load_catalogue(
            args.other_data / "products.csv", mapping, verify_images=False, progress=False
        )
    runs: dict[str, Any] = {}
    for run_name, task, seed in [
        (f"{t} seed {s}", t, int(s)) for t in args.tasks.split(",") for s in args.seeds.split(",")
    ]:
        options = TrainOptions(
            model="fusion-blend",
            calibration_folds=args.calibration_folds,
            seed=seed,
            target_accuracy=args.target_accuracy,
            image_size=args.image_size,
            fine_tune_whole=args.fine_tune_whole > 0,
            fine_tune_epochs=max(1, args.fine_tune_whole),
            **TASKS[task],  # type: ignore[arg-type]
        )
        start = time.perf_counter()
        saved = args.models_dir / f"{task}-{seed}" if args.models_dir else None
        if saved is not None and (saved / "model.json").exists():
            result = refit_gate(cat, Model.load(saved, runtime="torch"), options, cache, saved)
        else:
            result = train(cat, options, cache=cache, progress=False)
            if saved is not None:
                result.model.save(saved)
        runs[run_name] = measure(result, cache)
        runs[run_name]["train_seconds"] = time.perf_counter() - start
        runs[run_name]["seconds"] = result.seconds
        if other is not None:
            runs[run_name]["other"] = score_other(result.model, other, cache)
        console.print(
            run_name, {k: v for k, v in runs[run_name].items() if not isinstance(v, dict)}
        )
        if args.json:
            args.json.write_text(json.dumps(runs, indent=2))
    console.print(_table(runs))


def refit_gate(
    cat: Catalogue,
    model: Model,
    options: TrainOptions,
    cache: FeatureCache,
    saved: Path | None = None,
) -> TrainResult:
    """A saved model's head with the gate fitted anew, as `train` does after its fit; the
    cross-fitted logits are kept beside the model in `saved` and reused on the next run."""
    parts = split_catalogue([p for p in cat.products if p.label])
    kept = set(model.classes)
    train_part = [p for p in parts["train"] if _label(p) in kept]
    inputs = {
        name: model.encode(products, cache, progress=False)[0]
        for name, products in (
            ("train", train_part),
            ("validation", parts["validation"]),
            ("test", parts["test"]),
        )
    }
    train_data = (train_part, inputs["train"])
    validation = (parts["validation"], inputs["validation"])
    calibration = None
    if options.calibration_folds_used and saved is not None:
        calibration = _cached_calibration(
            saved / f"crossfit-{options.calibration_folds_used}.npz",
            lambda: cross_fitted_calibration(model, train_data, validation, options),
        )
    attach_gate(model, train_data, validation, options, calibration)
    proba = model.predict_proba(inputs["test"])
    test = evaluate_products(model, parts["test"], proba, inputs=inputs["test"])
    return TrainResult(model, parts, {}, {}, test, proba)


def _cached_calibration(path: Path, compute: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cross-fitted logits from `path` if there, else computed and saved there (npz)."""
    if path.exists():
        with np.load(path) as saved:
            cases = {k.split("/")[0] for k in saved.files}
            return {c: (saved[f"{c}/logits"], saved[f"{c}/y"]) for c in cases}
    found = compute()
    arrays = {f"{c}/{n}": a for c, (lg, y) in found.items() for n, a in (("logits", lg), ("y", y))}
    np.savez(path, **arrays)
    return found


def score_other(model: Model, cat: Catalogue, cache: FeatureCache) -> dict[str, Any]:
    """The model on every labelled product of another catalogue (classes it lacks: out of class)."""
    products = [p for p in cat.products if p.label]
    inputs, _ = model.encode(products, cache, progress=False)
    metrics = evaluate_products(model, products, model.predict_proba(inputs), inputs=inputs)
    keys = (
        "accuracy",
        "n_in_class",
        "n_out_of_class",
        "coverage",
        "accepted_accuracy",
        "decisions",
        "unknown_share",
        "guaranteed_accuracy",
        "n_out_of_class_accepted",
    )
    return {k: metrics.get(k) for k in keys}


def measure(result: TrainResult, cache: FeatureCache) -> dict[str, Any]:
    model, products = result.model, result.parts["test"]
    assert model.gate is not None
    inputs, _ = model.encode(products, cache, progress=False)
    out: dict[str, Any] = {"classes": len(model.classes), "n_train": model.figures["n_train"]}
    y = class_indices([_label(p) for p in products], model.classes)
    for shown in ("image,text", "image", "text"):
        masked = restrict(inputs, shown.split(","))
        proba = model.predict_proba(masked)
        metrics = evaluate_products(model, products, proba, inputs=masked)
        inside = y >= 0
        cases = model.gate.cases(masked)
        threshold = np.array([model.gate.accept_thresholds.get(c, 2.0) for c in cases])
        selected = inside & (proba.max(axis=1) >= threshold)
        correct = proba.argmax(axis=1) == y
        figures = {
            "accuracy": metrics["accuracy"],
            "coverage": metrics["coverage"],
            "accepted_accuracy": metrics["accepted_accuracy"],
            # The threshold alone, before any product is flagged unknown (the SELECT task).
            "select_coverage": float(selected.sum() / inside.sum()),
            "select_accuracy": float(correct[selected].mean()) if selected.any() else None,
            "review_top3": metrics["review_top3"],
            "unknown_share": metrics["unknown_share"],
            "ece_uncalibrated": metrics["ece_uncalibrated"],
            "ece": metrics["ece"],
            "n_in_class": metrics["n_in_class"],
            "n_out_of_class": metrics["n_out_of_class"],
            "ood_auroc": metrics.get("ood_auroc"),
            "ood_flagged_at_95": metrics.get("ood_flagged_at_95"),
            "ood_comparison": metrics.get("ood_comparison"),
        }
        out[shown] = figures
        if shown == "image,text" and (y == -1).any():
            out["out_of_class_passed"] = _passed_by_type(model, products, masked, proba, y)
    out["guarantee"] = model.gate.guarantee
    out["blocked_classes"] = {
        case: [model.classes[i] for i in blocked]
        for case, blocked in model.gate.blocked_classes.items()
    }
    out["temperatures"] = model.gate.temperatures
    out["accept_thresholds"] = model.gate.accept_thresholds
    out.update(_size_and_cost(model, inputs))
    return out


def _passed_by_type(
    model: Model, products: list[Any], inputs: Any, proba: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """The out-of-class products the OOD score lets through when 95% of in-class products pass
    (the flagged-at-95% point), by their true articleType, with what the model called them."""
    assert model.gate is not None
    scores = model.gate.ood_scores(inputs, model.head.decision_logits(inputs))
    inside, outside = y >= 0, y == -1
    passed = outside & (scores <= np.nanquantile(scores[inside], 0.95))
    by_type: dict[str, dict[str, Any]] = {}
    for i in np.flatnonzero(outside):
        entry = by_type.setdefault(_label(products[i]), {"passed": 0, "of": 0, "called": {}})
        entry["of"] += 1
        if passed[i]:
            entry["passed"] += 1
            called = model.classes[int(proba[i].argmax())]
            entry["called"][called] = entry["called"].get(called, 0) + 1
    ranked = sorted(by_type.items(), key=lambda kv: (-kv[1]["passed"], kv[0]))
    return {"passed": int(passed.sum()), "of": int(outside.sum()), "by_type": dict(ranked)}


def _size_and_cost(model: Model, inputs: Any) -> dict[str, Any]:
    """The saved model's size; the head's and the gate's (calibration, OOD score, decision,
    the answer) time for one product, medians of 50 calls."""
    with tempfile.TemporaryDirectory() as folder:
        saved = model.save(Path(folder) / "model")
        size = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
        gate_size = sum(f.stat().st_size for f in (saved / "gate").rglob("*") if f.is_file())
    assert model.gate is not None
    head_ms, gate_ms = [], []
    for i in range(50):
        one = inputs.subset([i % len(inputs)])
        start = time.perf_counter()
        logits = model.head.decision_logits(one)
        middle = time.perf_counter()
        model.predictions(["x"], model.calibrate(logits, one), inputs=one, logits=logits)
        head_ms.append(1000 * (middle - start))
        gate_ms.append(1000 * (time.perf_counter() - middle))
    return {
        "model_mb": size / 1e6,
        "gate_mb": gate_size / 1e6,
        "head_ms_per_product": statistics.median(head_ms),
        "gate_ms_per_product": statistics.median(gate_ms),
    }


def _label(product: Any) -> str:
    from prodcat.taxonomy.tree import format_path

    return format_path(product.label or ())


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _table(runs: dict[str, Any]) -> Table:
    table = Table(title="gate, test part", title_justify="left")
    for column in ("task", "shown", "accuracy", "coverage (threshold)", "its accuracy"):
        table.add_column(column)
    for column in ("coverage (gate)", "its accuracy", "review top-3", "ECE before -> after"):
        table.add_column(column)
    table.add_column("OOD AUROC / flagged@95")
    for task, run in runs.items():
        for shown in ("image,text", "image", "text"):
            f = run[shown]
            ood = (
                f"{f['ood_auroc']:.3f} / {_pct(f['ood_flagged_at_95'], 1)}"
                if f.get("ood_auroc") is not None
                else "-"
            )
            table.add_row(
                task,
                shown,
                _pct(f["accuracy"]),
                _pct(f["select_coverage"]),
                _pct(f["select_accuracy"]),
                _pct(f["coverage"]),
                _pct(f["accepted_accuracy"]),
                _pct(f["review_top3"]),
                f"{f['ece_uncalibrated']:.4f} -> {f['ece']:.4f}",
                ood,
            )
    return table


if __name__ == "__main__":
    main()
