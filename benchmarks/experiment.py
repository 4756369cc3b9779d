"""The prototype's experiment on real data: tasks T10 and FULL of ../shared/docs/BENCHMARK.md.

For each task (T10: the 10 largest articleTypes of the training part; FULL: every class with >= 20
training products, the class being the full path) and each image encoder, trains the title-only,
photo-only and photo+title models over several seeds on the grouped 80/10/10 split, and prints one
table of test-part figures (mean and spread over seeds) with training times. Features come through
the feature cache (`--cache-dir`), so only the first run pays for encoding.

    python benchmarks/experiment.py [--data ../shared/datasets/fashion-products] [--seeds 3]
        [--first-seed 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prodcat.catalogue import ColumnMapping, load_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.training.train import TrainOptions, train

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)
TASKS = {"T10": {"top_classes": 10}, "FULL": {"min_class_count": 20}}
MODELS = ("text", "image", "fusion")
# A model name with one of these suffixes fine-tunes the photo network: "-ft" its last blocks
# ("image-ft"), "-ftw" all of it, 4 epochs ("fusion-ftw": `prodcat train --fine-tune-whole`).
# The rows' model names and the head each trains.
HEADS = {"text": "text-linear", "image": "image", "fusion": "fusion-blend"}
FINE_TUNED = "-ft"
FINE_TUNED_WHOLE = "-ftw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (to add seeds later)"
    )
    parser.add_argument("--tasks", default="T10,FULL")
    parser.add_argument(
        "--image-encoders",
        default="effnet-lite0,effnet-lite2",
        help="names, with an input size if not the native one: effnet-lite0@160",
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="text,image,fusion; image-ft / fusion-ft fine-tune the photo network's last "
        "blocks, image-ftw / fusion-ftw all of it (minutes per epoch)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    csv_path = args.data / "products.csv"
    if not csv_path.exists():
        sys.exit(f"{csv_path} not found; pass --data PATH to the fashion-products folder")
    console = Console()
    cat = load_catalogue(csv_path, FASHION, verify_images=False, progress=True)
    cache = FeatureCache(args.cache_dir)
    runs: list[dict[str, Any]] = []
    for task in args.tasks.split(","):
        for encoder in args.image_encoders.split(","):
            for model in args.models.split(","):
                if model == "text" and encoder != args.image_encoders.split(",")[0]:
                    continue  # the title-only model does not depend on the image encoder
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    options = TrainOptions(
                        model=HEADS[model.split("-")[0]],
                        fine_tune=model.endswith(FINE_TUNED),
                        fine_tune_whole=model.endswith(FINE_TUNED_WHOLE),
                        image_encoder=encoder,
                        seed=seed,
                        # The random forest never wins and costs minutes on 30k titles; the
                        # prototype's L1 / L2 / forest comparison is in the demo's report.
                        text_families=("l2", "l1"),
                        **TASKS[task],  # type: ignore[arg-type]
                    )
                    start = time.perf_counter()
                    result = train(cat, options, cache=cache, progress=True)
                    run = {
                        "task": task,
                        "encoder": "-" if model == "text" else encoder,
                        "model": model,
                        "seed": seed,
                        "classes": len(result.model.classes),
                        "n_train": result.model.figures["n_train"],
                        "seconds": time.perf_counter() - start,
                        "fit_seconds": result.seconds["fit"],
                        **{k: result.test[k] for k in ("accuracy", "macro_f1", "level_accuracy")},
                    }
                    runs.append(run)
                    console.print(run)
                    if args.json:
                        args.json.write_text(json.dumps(runs, indent=2))
    console.print(_table(runs))


def _table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="test part, mean ± spread (max-min) over seeds", title_justify="left")
    for column in ("task", "model", "image encoder", "classes", "accuracy", "macro-F1", "fit s"):
        table.add_column(column)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["model"], run["encoder"]), []).append(run)
    for (task, model, encoder), group in groups.items():
        acc = [r["accuracy"] for r in group]
        f1 = [r["macro_f1"] for r in group]
        table.add_row(
            task,
            model,
            encoder,
            str(group[0]["classes"]),
            f"{statistics.mean(acc):.2%} ± {max(acc) - min(acc):.2%}",
            f"{statistics.mean(f1):.3f} ± {max(f1) - min(f1):.3f}",
            f"{statistics.median(r['fit_seconds'] for r in group):.1f}",
        )
    return table


if __name__ == "__main__":
    main()
