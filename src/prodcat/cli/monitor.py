"""`prodcat monitor`: is a batch of products unlike the validation part the model was tuned on?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prodcat.cli.common import (
    CacheDir,
    IdColumn,
    ImageColumn,
    LabelColumn,
    LabelColumns,
    ModelDir,
    Separator,
    TextColumns,
    column_mapping,
    fail,
    load_catalogue_or_exit,
    load_model_or_exit,
    out,
)

if TYPE_CHECKING:
    from prodcat.catalogue import Product
    from prodcat.model.bundle import Model
    from prodcat.monitor import DriftReport, Observations

DRIFT_EXIT_CODE = 3
DEFAULT_ALPHA = 0.01  # prodcat.monitor.drift.DEFAULT_ALPHA (copied: --help imports nothing)


def monitor_cmd(
    model_dir: ModelDir,
    catalogue: Annotated[
        Path, typer.Argument(metavar="CATALOGUE", help="The batch of products to check.")
    ],
    json_out: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="Write the verdict and every signal here."),
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help=f"Exit {DRIFT_EXIT_CODE} when drift is found.")
    ] = False,
    part: Annotated[
        str,
        typer.Option(
            metavar="PART", help="all, or the train, validation or test part of its labelled rows."
        ),
    ] = "all",
    alpha: Annotated[
        float,
        typer.Option(metavar="P", help="False-alarm rate per batch, over all signals together."),
    ] = DEFAULT_ALPHA,
    cache_dir: CacheDir = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
) -> None:
    """Compare a batch with the validation part stored in the model: decision shares, confidence,
    OOD score, predicted class mix, modalities present, photo sizes. Labels are not needed; when
    present, accuracy is reported too."""
    from prodcat.catalogue.split import split_catalogue
    from prodcat.features.cache import FeatureCache
    from prodcat.monitor import compare

    if not 0.0 < alpha < 1.0:
        fail(f"--alpha {alpha}; expected a false-alarm rate in (0, 1), e.g. 0.01")
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    model = load_model_or_exit(model_dir)
    if model.reference is None:
        fail(
            f"{model_dir} holds no drift reference (it was trained before prodcat monitor "
            "existed): retrain it with prodcat train"
        )
    products = load_catalogue_or_exit(catalogue, mapping).products
    if part != "all":
        parts = split_catalogue([p for p in products if p.label])
        if part not in parts:
            fail(f"--part {part!r}; expected all, {', '.join(parts)}")
        products = parts[part]
    if not products:
        fail(f"{catalogue} ({part}) has no products to check")
    inputs, _ = model.encode(products, FeatureCache(cache_dir))
    observations = model.observe(products, inputs)
    report = compare(model.reference, observations, alpha=alpha, class_names=model.classes)
    result = report.as_dict()
    accuracy = labelled_accuracy(model, products, observations)
    if accuracy is not None:
        result["accuracy"] = accuracy
    _print_verdict(report, accuracy, len(products))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    if report.drift and fail_on_drift:
        raise typer.Exit(DRIFT_EXIT_CODE)


def labelled_accuracy(
    model: Model, products: list[Product], observations: Observations
) -> dict[str, Any] | None:
    """Accuracy on the batch's labelled products of the model's classes (None: no labels)."""
    import numpy as np

    from prodcat.gate.gate import class_indices
    from prodcat.taxonomy.tree import format_path

    y = class_indices([format_path(p.label) if p.label else None for p in products], model.classes)
    inside = y >= 0
    if not (y != -2).any():
        return None
    correct = observations.predicted == y
    accepted = inside & (observations.decisions == "accept")
    validation = model.figures.get("validation", {})
    return {
        "n_labelled": int(np.count_nonzero(y != -2)),
        "n_in_class": int(inside.sum()),
        "n_out_of_class": int(np.count_nonzero(y == -1)),
        "accuracy": float(correct[inside].mean()) if inside.any() else None,
        "accepted_accuracy": float(correct[accepted].mean()) if accepted.any() else None,
        "coverage": float(accepted.sum() / inside.sum()) if inside.any() else None,
        "validation_accuracy": validation.get("accuracy"),
        "validation_accepted_accuracy": validation.get("accepted_accuracy"),
    }


def _print_verdict(report: DriftReport, accuracy: dict[str, Any] | None, n: int) -> None:
    tested = len(report.signals)
    if report.drift:
        out.print(
            f"DRIFT: {len(report.reasons)} of {tested} signals differ from the validation part "
            f"({n:,} products; Holm, alpha {report.alpha:g}):"
        )
        for reason in report.reasons:
            out.print(f"  - {reason}")
    else:
        out.print(
            f"no drift: {tested} signals within the validation part's range "
            f"({n:,} products; Holm, alpha {report.alpha:g})"
        )
    if accuracy is not None and accuracy["accuracy"] is not None:
        accepted = accuracy["accepted_accuracy"]
        out.print(
            f"labelled: accuracy {accuracy['accuracy']:.2%} on {accuracy['n_in_class']:,} "
            "products of the model's classes"
            + (f", accepted accuracy {accepted:.2%}" if accepted is not None else "")
        )


def register(app: typer.Typer) -> None:
    app.command("monitor", short_help="Check a batch for drift from the training catalogue.")(
        monitor_cmd
    )
