"""`prodcat train` and `prodcat evaluate`: learn a model from a labelled catalogue, measure one.

The figures table, the gate line and the HTML report are shared with `prodcat demo`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prodcat.cli.common import (
    DEFAULT_CALIBRATION_FOLDS,
    DEFAULT_FINE_TUNE_EPOCHS,
    DEFAULT_MIN_CLASS_COUNT,
    DEFAULT_TARGET_ACCURACY,
    REPORT_MODULES,
    TRAIN_MODULES,
    CacheDir,
    IdColumn,
    ImageColumn,
    LabelColumn,
    LabelColumns,
    Modalities,
    ModelDir,
    Separator,
    TextColumns,
    Threshold,
    column_mapping,
    fail,
    fmt,
    load_catalogue_or_exit,
    load_model_or_exit,
    out,
    require_extra,
    warn,
)

if TYPE_CHECKING:
    from rich.table import Table

    from prodcat.catalogue import Catalogue
    from prodcat.features.cache import FeatureCache
    from prodcat.training.train import TrainOptions, TrainResult

ModelKindOpt = Annotated[
    str,
    typer.Option(
        "--model",
        metavar="HEAD",
        help="fusion-blend (photo + title, the default), fusion (the network alone), text-linear "
        "(title only) or image (photo only).",
    ),
]


def train_cmd(
    catalogue: Annotated[
        Path, typer.Argument(metavar="CATALOGUE", help="Labelled catalogue to learn from.")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="FOLDER", help="Model directory to write.")
    ],
    model: ModelKindOpt = "fusion-blend",
    image_encoder: Annotated[
        str, typer.Option(metavar="NAME", help="effnet-lite0 or effnet-lite2.")
    ] = "effnet-lite0",
    image_size: Annotated[
        int | None,
        typer.Option(
            metavar="PX",
            help="Photo network input size in px (default: native, 224 for Lite0); "
            "160 encodes small thumbnails ~2x faster.",
        ),
    ] = None,
    text_encoder: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="bow, tfidf (text model) or minilm (fusion)."),
    ] = None,
    top_classes: Annotated[
        int | None, typer.Option(metavar="N", help="Learn the N largest classes.")
    ] = None,
    min_class_count: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help=f"Learn classes with at least N training products ({DEFAULT_MIN_CLASS_COUNT}).",
        ),
    ] = None,
    fine_tune: Annotated[
        bool,
        typer.Option(
            "--fine-tune",
            help="Also train the last EfficientNet-Lite blocks (fusion or image; slower).",
        ),
    ] = False,
    fine_tune_whole: Annotated[
        bool,
        typer.Option(
            "--fine-tune-whole",
            help="First fine-tune every layer of the photo network on the catalogue and use it as "
            "the photo encoder (+2-3 points photo-only; minutes per epoch: see docs/training.md).",
        ),
    ] = False,
    fine_tune_epochs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help=f"Epochs of --fine-tune-whole ({DEFAULT_FINE_TUNE_EPOCHS}; the best on "
            "validation is kept).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed.")] = 0,
    target_accuracy: Annotated[
        float,
        typer.Option(
            metavar="P",
            help="Accuracy the accepted products must keep, certified with 95% confidence on the "
            "calibration products.",
        ),
    ] = DEFAULT_TARGET_ACCURACY,
    calibration_folds: Annotated[
        int,
        typer.Option(
            metavar="K",
            help="Calibrate the gate on the training + validation parts scored out of fold by K "
            "cross-fitted heads (0: on the validation part only).",
        ),
    ] = DEFAULT_CALIBRATION_FOLDS,
    report: Annotated[
        Path | None, typer.Option(metavar="FOLDER", help="Also write the HTML report here.")
    ] = None,
    extra_labels: Annotated[
        Path | None,
        typer.Option(
            metavar="CSV",
            help="labels CSV (prodcat review export): overrides labels for its ids.",
        ),
    ] = None,
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Train a classifier; prints the validation and test figures and saves the model."""
    require_extra("prodcat train", "train", TRAIN_MODULES)
    from prodcat.features.cache import FeatureCache

    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    options = _train_options(
        model=model,
        image_encoder=image_encoder,
        image_size=image_size,
        text_encoder=text_encoder,
        top_classes=top_classes,
        min_class_count=min_class_count,
        seed=seed,
        target_accuracy=target_accuracy,
        calibration_folds=calibration_folds,
        fine_tune=fine_tune,
        fine_tune_whole=fine_tune_whole,
        fine_tune_epochs=fine_tune_epochs,
    )
    cache = FeatureCache(cache_dir)
    cat = load_catalogue_or_exit(
        catalogue, mapping, decoded=_cached_photos(cache, options), require_labels=True
    )
    if extra_labels is not None:
        cat = _with_extra_labels(cat, extra_labels)
    result = run_training(cat, options, cache)
    result.model.save(out_dir)
    out.print(f"model: {out_dir}")
    if report is not None:
        write_training_report(result, report)


def _train_options(*, fine_tune_epochs: int | None, **given: object) -> TrainOptions:
    from prodcat.training.train import TrainOptions

    try:
        if fine_tune_epochs is not None and not given["fine_tune_whole"]:
            raise ValueError("--fine-tune-epochs sets the epochs of --fine-tune-whole: pass both")
        epochs = TrainOptions.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs
        return TrainOptions(**given, fine_tune_epochs=epochs)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))


def _cached_photos(cache: FeatureCache, options: TrainOptions) -> Callable[[str], bool] | None:
    """Photos whose features the cache holds decoded before: loading need not decode them."""
    from prodcat.encoders.registry import get_encoder

    if options.resolved_image_encoder is None:
        return None
    store = cache.store(get_encoder(options.resolved_image_encoder).version)
    return store.__contains__


def _with_extra_labels(cat: Catalogue, path: Path) -> Catalogue:
    from prodcat.catalogue.extra_labels import apply_extra_labels, read_labels_csv

    try:
        extra = read_labels_csv(path)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    cat, unknown = apply_extra_labels(cat, extra)
    out.print(f"extra labels: {len(extra.labels) - len(unknown):,} products relabelled from {path}")
    for line in extra.problems[:20]:
        warn(line)
    if unknown:
        warn(
            ", ".join(unknown[:10]),
            f"{len(unknown):,} labelled ids are not in the catalogue, left out:",
        )
    return cat


def run_training(cat: Catalogue, options: TrainOptions, cache: FeatureCache) -> TrainResult:
    """Train, then print the split, the classes left out, the figures and the gate."""
    from prodcat.training.train import train

    try:
        result = train(cat, options, cache=cache)
    except ValueError as exc:
        fail(str(exc))
    parts = ", ".join(f"{k} {len(v):,}" for k, v in result.parts.items())
    out.print(f"split: {parts}")
    out.print(_classes_line(result))
    tuned = result.model.options.get("fine_tune_whole_result")
    if tuned:
        best = tuned["history"][tuned["best_epoch"] - 1]
        out.print(
            f"photo network fine-tuned on {tuned['n_train']:,} photos: epoch {best['epoch']} of "
            f"{len(tuned['history'])} kept (photo-only validation accuracy "
            f"{best['validation']:.2%}), {result.seconds.get('fine-tune', 0):.0f} s"
        )
    out.print(_figures_table(result))
    if result.model.gate is not None:
        out.print(_gate_line(result))
    return result


def _classes_line(result: TrainResult) -> str:
    """How many classes were learned, and every class left out with its training products."""
    learned, left_out = len(result.model.classes), result.excluded
    line = f"classes: {learned:,} learned of {learned + len(left_out):,}"
    if not left_out:
        return line
    options = result.model.options
    why = (
        f"not among the {options['top_classes']:,} largest"
        if options.get("top_classes")
        else "each with fewer than "
        f"{options.get('min_class_count') or DEFAULT_MIN_CLASS_COUNT:,} training products"
    )
    named = ", ".join(f"{name} ({n:,})" for name, n in left_out.items())
    return (
        f"{line}; {len(left_out):,} left out, {why} (the count after each name; "
        f"{sum(left_out.values()):,} in all), measured as out-of-class: {named}"
    )


def _gate_line(result: TrainResult) -> str:
    """The gate on the test part: what share is accepted, how accurate, the guarantee behind it,
    how well calibrated; then the classes never accepted."""
    t = result.test
    return (
        f"gate (test): coverage {fmt(t.get('coverage'), '.2%')} at accepted accuracy "
        f"{fmt(t.get('accepted_accuracy'), '.2%')} (target "
        f"{result.model.options.get('target_accuracy')}; {_guarantee_text(result)}), review "
        f"top-3 {fmt(t.get('review_top3'), '.2%')}, ECE {fmt(t.get('ece_uncalibrated'), '.4f')} "
        f"-> {fmt(t.get('ece'), '.4f')}"
        + (
            f", OOD AUROC {fmt(t.get('ood_auroc'), '.3f')} "
            f"(on {t.get('n_out_of_class', 0):,} out-of-class products)"
            if t.get("ood_auroc") is not None
            else ""
        )
        + _blocked_text(result)
        + _accept_nothing_hint(result)
    )


def _guarantee_text(result: TrainResult) -> str:
    """What the thresholds were certified on: the guaranteed accuracy, products, delta."""
    gate = result.model.gate
    g = gate.guarantee if gate is not None else {}
    if not g:
        return "no certificate"
    confidence = 1 - float(g.get("delta", 0.05))
    return (
        f"guaranteed >= {fmt(g.get('guaranteed_accuracy'), '.2%')} with {confidence:.0%} "
        f"confidence on {g.get('n_calibration', 0):,} calibration products, "
        f"{g.get('calibration', '')}"
    )


CASE_NAMES = {"image+text": "photo + title", "image": "photo only", "text": "title only"}


def _blocked_text(result: TrainResult) -> str:
    """Per case, the classes whose own evidence cannot hold the target at the case's threshold:
    with their own (higher) threshold, or never accepted."""
    from prodcat.gate.calibration import ACCEPT_NOTHING

    lines = []
    for case, limits in (result.test.get("class_thresholds") or {}).items():
        raised = [f"{name} ({t:.4f})" for name, t in limits.items() if t < ACCEPT_NOTHING]
        never = [name for name, t in limits.items() if t >= ACCEPT_NOTHING]
        if raised:
            lines.append(f"{CASE_NAMES.get(case, case)}, own higher threshold: {', '.join(raised)}")
        if never:
            lines.append(
                f"{CASE_NAMES.get(case, case)}, never accepted, always reviewed: {', '.join(never)}"
            )
    if not lines:
        return ""
    return (
        "\nclasses whose own calibration products cannot support the target at the common "
        "threshold: " + "; ".join(lines)
    )


def _accept_nothing_hint(result: TrainResult) -> str:
    """Why nothing is accepted, when the calibration products are too few to show the target."""
    from prodcat.gate.calibration import min_accepted

    target = float(result.model.options.get("target_accuracy") or DEFAULT_TARGET_ACCURACY)
    gate = result.model.gate
    n = int((gate.guarantee if gate is not None else {}).get("n_calibration") or 0)
    if result.test.get("coverage") or n >= min_accepted(target):
        return ""
    return (
        f"\nnothing is accepted: {n:,} calibration products cannot certify {target:.1%} "
        f"accuracy (that takes at least {min_accepted(target):,}, every one right), so every "
        "product goes to review; train on more products or lower --target-accuracy"
    )


def _figures_table(result: TrainResult) -> Table:
    from rich.table import Table

    table = Table(title="figures", title_justify="left")
    for column in ("part", "accuracy", "macro-F1", "top-3", "per level", "in class", "out"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for name, metrics in (("validation", result.validation), ("test", result.test)):
        table.add_row(
            name,
            fmt(metrics["accuracy"], ".2%"),
            fmt(metrics["macro_f1"], ".3f"),
            fmt(metrics["top3_accuracy"], ".2%"),
            " / ".join(f"{a:.1%}" for a in metrics["level_accuracy"]),
            f"{metrics['n_in_class']:,}",
            f"{metrics['n_out_of_class']:,}",
        )
    return table


def write_training_report(result: TrainResult, folder: Path) -> Path:
    from prodcat.report.html import write_report

    model = result.model
    info = {
        "head": model.head.name,
        "image encoder": model.image_encoder or "-",
        "text encoder": model.options.get("text_encoder", "-"),
        "classes": len(model.classes),
        "training products": model.figures.get("n_train"),
        "validation accuracy": fmt(result.validation["accuracy"], ".2%"),
        "seconds (encode / fit)": " / ".join(
            f"{result.seconds.get(k, 0):.1f}" for k in ("encode", "fit")
        ),
    }
    selection = getattr(model.head, "validation_report_", {}) or {}
    path = write_report(
        folder,
        title=f"prodcat {model.head.name} model: test part",
        metrics=result.test,
        model_info=info,
        model_selection=selection.get("trials"),
    )
    out.print(f"report: {path}")
    return path


EVALUATE_KEYS = ("accuracy", "macro_f1", "top3_accuracy", "n_in_class", "n_out_of_class")
GATE_KEYS = (
    "coverage",
    "accepted_accuracy",
    "review_top3",
    "unknown_share",
    "ece_uncalibrated",
    "ece",
    "ood_auroc",
    "ood_flagged_at_95",
    "guaranteed_accuracy",
    "n_calibration",
    "delta",
)


def evaluate_cmd(
    model_dir: ModelDir,
    catalogue: Annotated[
        Path, typer.Argument(metavar="CATALOGUE", help="Labelled catalogue to measure on.")
    ],
    part: Annotated[
        str,
        typer.Option(metavar="PART", help="all, train, validation or test part of the catalogue."),
    ] = "all",
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Write the figures here.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(metavar="FOLDER", help="Write the HTML report here.")
    ] = None,
    modalities: Modalities = None,
    threshold: Threshold = None,
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Measure a model on a labelled catalogue: accuracy, macro-F1, per level, out-of-class."""
    if report is not None:
        require_extra("prodcat evaluate --report", "report", REPORT_MODULES)
    from rich.table import Table

    from prodcat.catalogue.split import split_catalogue
    from prodcat.features.cache import FeatureCache
    from prodcat.heads.inputs import restrict
    from prodcat.training.metrics import evaluate_products

    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    shown = parse_modalities_or_exit(modalities)
    loaded = load_model_or_exit(model_dir)
    cat = load_catalogue_or_exit(catalogue, mapping, require_labels=True)
    products = [p for p in cat.products if p.label]
    if part != "all":
        parts = split_catalogue(products)
        if part not in parts:
            fail(f"--part {part!r}; expected all, {', '.join(parts)}")
        products = parts[part]
    inputs, _ = loaded.encode(products, FeatureCache(cache_dir))
    inputs = restrict(inputs, shown)
    metrics = evaluate_products(
        loaded, products, loaded.predict_proba(inputs), inputs=inputs, threshold=threshold
    )
    table = Table("figure", "value", title=f"{model_dir} on {catalogue} ({part})")
    for key in (*EVALUATE_KEYS, *GATE_KEYS):
        if key not in metrics:
            continue
        value = metrics[key]
        table.add_row(key, fmt(value, ".4f" if isinstance(value, float) else ","))
    table.add_row("level_accuracy", " / ".join(f"{a:.4f}" for a in metrics["level_accuracy"]))
    out.print(table)
    for case, blocked in (metrics.get("blocked_classes") or {}).items():
        if blocked:
            out.print(f"never accepted ({CASE_NAMES.get(case, case)}): {', '.join(blocked)}")
    if json_out is not None:
        json_out.write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    if report is not None:
        from prodcat.report.html import write_report

        path = write_report(
            report,
            title=f"prodcat evaluation: {catalogue.name} ({part})",
            metrics=metrics,
            model_info={"model": str(model_dir), "head": loaded.head.name, **loaded.figures},
        )
        out.print(f"report: {path}")


def parse_modalities_or_exit(value: str | None) -> frozenset[str] | None:
    from prodcat.heads.inputs import parse_modalities

    try:
        return parse_modalities(value)
    except ValueError as exc:
        fail(f"--modalities: {exc}")


def register(app: typer.Typer) -> None:
    app.command("train", short_help="Train a model, print its figures and save it.")(train_cmd)
    app.command("evaluate", short_help="Measure a model on a labelled catalogue.")(evaluate_cmd)
