"""The `prodcat` command: thin wrappers that parse flags and call the library."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prodcat import __version__
from prodcat.catalogue import (
    Catalogue,
    ColumnMapping,
    format_summary,
    summarise,
)
from prodcat.catalogue.split import split_catalogue
from prodcat.cli.common import (
    CacheDir,
    IdColumn,
    ImageColumn,
    LabelColumn,
    LabelColumns,
    Modalities,
    Separator,
    TextColumns,
    Threshold,
    column_mapping,
    err,
    load_catalogue_or_exit,
    load_model_or_exit,
    out,
)
from prodcat.encoders.registry import get_encoder, list_encoders
from prodcat.features.cache import FeatureCache
from prodcat.features.encode import encode_products
from prodcat.gate.calibration import min_accepted
from prodcat.gate.gate import DEFAULT_TARGET_ACCURACY, parse_modalities, restrict
from prodcat.model.prediction import Prediction
from prodcat.model.predictions_file import write_predictions
from prodcat.model.predictor import Predictor
from prodcat.report.html import write_report
from prodcat.serving.command import serve
from prodcat.training.train import TrainOptions, TrainResult, evaluate_products, train

app = typer.Typer(
    help="prodcat: put products into the categories of a taxonomy from a photo and a title.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def check(
    catalogue: Annotated[Path, typer.Argument(help="CSV / TSV / JSONL / Parquet file or folder.")],
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a catalogue row by row and summarise it; exit 1 when rows were rejected."""
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    cat = load_catalogue_or_exit(catalogue, mapping, quiet=as_json)
    summary = summarise(cat)
    summary["split"] = {name: len(part) for name, part in split_catalogue(cat.products).items()}
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        out.print(format_summary(summary))
    if cat.rejected:
        raise typer.Exit(1)


@app.command()
def encode(
    catalogue: Annotated[Path, typer.Argument(help="CSV / TSV / JSONL / Parquet file or folder.")],
    image_encoder: Annotated[str, typer.Option(help="Image encoder name.")] = "effnet-lite0",
    text_encoder: Annotated[str, typer.Option(help="Text encoder name.")] = "minilm",
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Encode every product's photo and title into the feature cache."""
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    cat = load_catalogue_or_exit(catalogue, mapping)
    _encode_report(cat, [image_encoder, text_encoder], FeatureCache(cache_dir))


def _encode_report(cat: Catalogue, encoder_names: list[str], cache: FeatureCache) -> None:
    table = Table(title="features", title_justify="left")
    columns = ("encoder", "dim", "products", "distinct", "computed", "from cache", "errors", "s")
    for column in columns:
        table.add_column(column, justify="left" if column == "encoder" else "right")
    for name in encoder_names:
        encoder = get_encoder(name)
        start = time.perf_counter()
        feats = encode_products(cat.products, encoder, cache)
        seconds = time.perf_counter() - start
        table.add_row(
            name,
            str(encoder.dim),
            f"{len(feats.ids):,}",
            f"{feats.n_computed + feats.n_cached:,}",
            f"{feats.n_computed:,}",
            f"{feats.n_cached:,}",
            f"{len(feats.errors):,}",
            f"{seconds:.1f}",
        )
        for pid, reason in list(feats.errors.items())[:10]:
            err.print(f"[yellow]product {pid}:[/yellow] {reason}")
    out.print(table)
    out.print(f"cache: {cache.root}")


ModelKindOpt = Annotated[
    str, typer.Option("--model", help="fusion (photo + title), text or image.")
]


@app.command("train")
def train_cmd(
    catalogue: Annotated[Path, typer.Argument(help="Labelled catalogue to learn from.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    model: ModelKindOpt = "fusion",
    image_encoder: Annotated[str, typer.Option(help="effnet-lite0 or effnet-lite2.")] = (
        "effnet-lite0"
    ),
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Photo network input size in px (default: native, 224 for Lite0); "
            "160 encodes small thumbnails ~2x faster."
        ),
    ] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="bow, tfidf (text model) or minilm (fusion).")
    ] = None,
    top_classes: Annotated[int | None, typer.Option(help="Learn the N largest classes.")] = None,
    min_class_count: Annotated[
        int | None, typer.Option(help="Learn classes with at least N training products (5).")
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
            "the photo encoder (+2-3 points photo-only; minutes per epoch: see the README).",
        ),
    ] = False,
    fine_tune_epochs: Annotated[
        int | None,
        typer.Option(
            help=f"Epochs of --fine-tune-whole ({TrainOptions.fine_tune_epochs}; the best on "
            "validation is kept)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    target_accuracy: Annotated[
        float, typer.Option(help="Accuracy of accepted products to reach on validation.")
    ] = DEFAULT_TARGET_ACCURACY,
    report: Annotated[Path | None, typer.Option(help="Also write the HTML report here.")] = None,
    extra_labels: Annotated[
        Path | None,
        typer.Option(help="labels CSV (prodcat review export): overrides labels for its ids."),
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
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    try:
        options = TrainOptions(
            model=model,  # type: ignore[arg-type]
            image_encoder=image_encoder,
            image_size=image_size,
            text_encoder=text_encoder,
            top_classes=top_classes,
            min_class_count=min_class_count,
            seed=seed,
            target_accuracy=target_accuracy,
            fine_tune=fine_tune,
            fine_tune_whole=fine_tune_whole,
            fine_tune_epochs=(
                TrainOptions.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs
            ),
        )
        if fine_tune_epochs is not None and not fine_tune_whole:
            raise ValueError("--fine-tune-epochs sets the epochs of --fine-tune-whole: pass both")
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    cache = FeatureCache(cache_dir)
    cat = load_catalogue_or_exit(catalogue, mapping, decoded=_cached_photos(cache, options))
    if extra_labels is not None:
        cat = _with_extra_labels(cat, extra_labels)
    result = _train(cat, options, cache)
    result.model.save(out_dir)
    out.print(f"model: {out_dir}")
    if report is not None:
        _write_report(result, report)


def _cached_photos(cache: FeatureCache, options: TrainOptions) -> Callable[[str], bool] | None:
    """Photos whose features the cache holds decoded before: loading need not decode them."""
    if options.resolved_image_encoder is None:
        return None
    store = cache.store(get_encoder(options.resolved_image_encoder).version)
    return store.__contains__


def _with_extra_labels(cat: Catalogue, path: Path) -> Catalogue:
    from prodcat.catalogue.extra_labels import apply_extra_labels, read_labels_csv

    try:
        extra = read_labels_csv(path)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    cat, unknown = apply_extra_labels(cat, extra)
    out.print(f"extra labels: {len(extra.labels) - len(unknown):,} products relabelled from {path}")
    for line in extra.problems[:20]:
        err.print(f"[yellow]{line}[/yellow]")
    if unknown:
        err.print(
            f"[yellow]{len(unknown):,} labelled ids are not in the catalogue, left out:[/yellow] "
            + ", ".join(unknown[:10])
        )
    return cat


def _train(cat: Catalogue, options: TrainOptions, cache: FeatureCache) -> TrainResult:
    try:
        result = train(cat, options, cache=cache)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    parts = ", ".join(f"{k} {len(v):,}" for k, v in result.parts.items())
    out.print(f"split: {parts}")
    if result.excluded:
        left_out = sum(result.excluded.values())
        out.print(
            f"left out of training: {len(result.excluded)} classes, {left_out:,} products "
            f"(below the class-size floor): {', '.join(list(result.excluded)[:8])}"
            + (" ..." if len(result.excluded) > 8 else "")
        )
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


def _gate_line(result: TrainResult) -> str:
    """The gate on the test part: what share is accepted, how accurate, how well calibrated."""
    t = result.test
    return (
        f"gate (test): coverage {_fmt(t.get('coverage'), '.2%')} at accepted accuracy "
        f"{_fmt(t.get('accepted_accuracy'), '.2%')} (target "
        f"{result.model.options.get('target_accuracy')}), review top-3 "
        f"{_fmt(t.get('review_top3'), '.2%')}, ECE {_fmt(t.get('ece_uncalibrated'), '.4f')} -> "
        f"{_fmt(t.get('ece'), '.4f')}"
        + (
            f", OOD AUROC {_fmt(t.get('ood_auroc'), '.3f')} "
            f"(on {t.get('n_out_of_class', 0):,} out-of-class products)"
            if t.get("ood_auroc") is not None
            else ""
        )
        + _accept_nothing_hint(result)
    )


def _accept_nothing_hint(result: TrainResult) -> str:
    """Why nothing is accepted, when the validation part is too small to show the target."""
    target = float(result.model.options.get("target_accuracy") or DEFAULT_TARGET_ACCURACY)
    n_validation = int(result.validation.get("n_in_class") or 0)
    if result.test.get("coverage") or n_validation >= min_accepted(target):
        return ""
    return (
        f"\nnothing is accepted: {n_validation:,} validation products cannot show {target:.1%} "
        f"accuracy (that takes at least {min_accepted(target):,}), so every product goes to "
        "review; train on more products or lower --target-accuracy"
    )


def _figures_table(result: TrainResult) -> Table:
    table = Table(title="figures", title_justify="left")
    for column in ("part", "accuracy", "macro-F1", "top-3", "per level", "in class", "out"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for name, metrics in (("validation", result.validation), ("test", result.test)):
        table.add_row(
            name,
            _fmt(metrics["accuracy"], ".2%"),
            _fmt(metrics["macro_f1"], ".3f"),
            _fmt(metrics["top3_accuracy"], ".2%"),
            " / ".join(f"{a:.1%}" for a in metrics["level_accuracy"]),
            f"{metrics['n_in_class']:,}",
            f"{metrics['n_out_of_class']:,}",
        )
    return table


def _fmt(value: float | None, spec: str) -> str:
    """A figure, or '-' where there was nothing to measure (no in-class products)."""
    return "-" if value is None else format(value, spec)


def _write_report(result: TrainResult, folder: Path) -> Path:
    model = result.model
    info = {
        "head": model.head.name,
        "image encoder": model.image_encoder or "-",
        "text encoder": model.options.get("text_encoder", "-"),
        "classes": len(model.classes),
        "training products": model.figures.get("n_train"),
        "validation accuracy": _fmt(result.validation["accuracy"], ".2%"),
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


@app.command("evaluate")
def evaluate_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from prodcat train.")],
    catalogue: Annotated[Path, typer.Argument(help="Labelled catalogue to measure on.")],
    part: Annotated[
        str, typer.Option(help="all, train, validation or test part of the catalogue.")
    ] = "all",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
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
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    loaded = load_model_or_exit(model_dir)
    cat = load_catalogue_or_exit(catalogue, mapping)
    products = [p for p in cat.products if p.label]
    if part != "all":
        parts = split_catalogue(products)
        if part not in parts:
            err.print(f"[red]error:[/red] --part {part!r}; expected all, {', '.join(parts)}")
            raise typer.Exit(2)
        products = parts[part]
    shown = _modalities(modalities)
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
        table.add_row(key, _fmt(value, ".4f" if isinstance(value, float) else ","))
    table.add_row("level_accuracy", " / ".join(f"{a:.4f}" for a in metrics["level_accuracy"]))
    out.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    if report is not None:
        path = write_report(
            report,
            title=f"prodcat evaluation: {catalogue.name} ({part})",
            metrics=metrics,
            model_info={"model": str(model_dir), "head": loaded.head.name, **loaded.figures},
        )
        out.print(f"report: {path}")


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
)


def _modalities(value: str | None) -> frozenset[str] | None:
    try:
        return parse_modalities(value)
    except ValueError as exc:
        err.print(f"[red]error:[/red] --modalities: {exc}")
        raise typer.Exit(2) from None


@app.command("predict")
def predict_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from prodcat train.")],
    catalogue: Annotated[Path, typer.Argument(help="Products to label (labels not needed).")],
    out_file: Annotated[Path, typer.Option("--out", help="Predictions file: .csv or .jsonl.")],
    min_confidence: Annotated[
        float | None,
        typer.Option(help="Back off to the deepest ancestor at least this probable."),
    ] = None,
    threshold: Threshold = None,
    modalities: Modalities = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Label products from a file; rows that cannot be read get an error, the batch goes on.

    Photos and titles are encoded in memory on ONNX Runtime (no feature cache, no torch), the
    path the REST API takes, with photos decoded in threads while the networks run."""
    if out_file.suffix.lower() not in (".csv", ".jsonl"):
        err.print(f"[red]error:[/red] --out {out_file}: expected a .csv or .jsonl file name")
        raise typer.Exit(2)
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    shown = _modalities(modalities)
    loaded = load_model_or_exit(model_dir)
    cat = load_catalogue_or_exit(catalogue, mapping)
    answers = Predictor(loaded).predict_products(
        cat.products, min_confidence=min_confidence, threshold=threshold, modalities=shown
    )
    errors = [a for a in answers if a.error]
    rejected = [
        Prediction(
            id=pr.id or f"line {pr.row}",
            category="",
            probability=0.0,
            level_probabilities=[],
            top=[],
            error=pr.message,
        )
        for pr in cat.rejected
    ]
    write_predictions(out_file, answers + rejected)
    counts = {d: sum(a.decision == d for a in answers) for d in ("accept", "review", "unknown")}
    out.print(
        f"{len(answers):,} products labelled, {len(rejected):,} rows rejected "
        f"({len(errors):,} answered without their photo): {out_file}\n"
        + ", ".join(f"{d} {n:,}" for d, n in counts.items())
    )


@app.command("encoders")
def encoders_cmd() -> None:
    """List the registered encoders."""
    table = Table("name", "modality", "description")
    for info in list_encoders():
        table.add_row(info.name, info.modality, info.description)
    out.print(table)


def sample_catalogue() -> Path:
    """The real sample catalogue shipped with the package."""
    return Path(str(resources.files("prodcat") / "data" / "sample" / "products.csv"))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where models and the report go.")] = Path(
        "prodcat-demo"
    ),
    cache_dir: CacheDir = None,
) -> None:
    """Run prodcat on the bundled sample: check, train text / image / fusion, evaluate, report."""
    path = sample_catalogue()
    out.rule(f"prodcat {__version__} demo: the bundled sample catalogue")
    out.print(f"catalogue: {path}")
    cat = load_catalogue_or_exit(path, ColumnMapping())
    summary = summarise(cat)
    summary["split"] = {name: len(part) for name, part in split_catalogue(cat.products).items()}
    out.print(format_summary(summary))
    cache = FeatureCache(cache_dir)
    results: dict[str, TrainResult] = {}
    for kind in ("text", "image", "fusion"):
        out.rule(f"training the {kind} model")
        results[kind] = _train(cat, TrainOptions(model=kind), cache)
        results[kind].model.save(out_dir / kind)
    experiments = [
        {
            "name": {
                "text": "title only (TF-IDF + linear)",
                "image": "photo only (EfficientNet-Lite0 + linear)",
                "fusion": "photo + title (fusion network x title words)",
            }[kind],
            "accuracy": r.test["accuracy"],
            "macro_f1": r.test["macro_f1"],
            "fit_seconds": r.seconds.get("fit", 0.0),
        }
        for kind, r in results.items()
    ]
    best = results["fusion"]
    selection = getattr(results["text"].model.head, "validation_report_", {}) or {}
    report = write_report(
        out_dir / "report",
        title="prodcat demo: the bundled sample, test part",
        metrics=best.test,
        model_info={"model": str(out_dir / "fusion"), "head": "fusion", **best.model.figures},
        experiments=experiments,
        model_selection=selection.get("trials"),
    )
    out.rule("results (test part)")
    for row in experiments:
        accuracy, macro_f1 = _fmt(row["accuracy"], ".2%"), _fmt(row["macro_f1"], ".3f")
        out.print(f"{row['name']:<40} accuracy {accuracy}  macro-F1 {macro_f1}")
    out.print(f"\nreport: {report}\nmodels: {out_dir}/{{text,image,fusion}}")
    out.rule("next")
    out.print(
        f"- open the report:     xdg-open {report}\n"
        f"- label products:      prodcat predict {out_dir}/fusion products.csv --out labels.csv\n"
        f"- measure a model:     prodcat evaluate {out_dir}/fusion products.csv --json fig.json\n"
        "- your own catalogue:  prodcat check products.csv --label-columns a,b,c\n"
        "- the catalogue format and the code map: README.md"
    )


app.command("serve")(serve)  # prodcat.serving.command: the REST API under uvicorn
