"""`prodcat predict` (label a file of products) and `prodcat serve` (the REST API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodcat.cli.common import (
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
    load_catalogue_or_exit,
    load_model_or_exit,
    out,
)
from prodcat.cli.training import parse_modalities_or_exit


def predict_cmd(
    model_dir: ModelDir,
    catalogue: Annotated[
        Path,
        typer.Argument(metavar="CATALOGUE", help="Products to label (labels not needed)."),
    ],
    out_file: Annotated[
        Path, typer.Option("--out", metavar="FILE", help="Predictions file: .csv or .jsonl.")
    ],
    min_confidence: Annotated[
        float | None,
        typer.Option(metavar="P", help="Back off to the deepest ancestor at least this probable."),
    ] = None,
    threshold: Threshold = None,
    modalities: Modalities = None,
    id_column: IdColumn = "id",
    text_column: TextColumns = None,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "category",
    label_columns: LabelColumns = None,
    separator: Separator = ">",
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Add each answer's reasons: the title words that decided, photo against title, "
            "the 3 nearest training products (docs/explain.md).",
        ),
    ] = False,
) -> None:
    """Label products from a file; rows that cannot be read get an error, the batch goes on.

    A product whose photo cannot be decoded is answered from its title, the photo's error in the
    error column. When the file has labels, the predictions file adds the true category and
    whether the answer is correct. Photos and titles are encoded in memory on ONNX Runtime (no
    feature cache, no torch), the path the REST API takes."""
    from prodcat.gate.gate import DECISIONS
    from prodcat.model.prediction import Prediction
    from prodcat.model.predictions_file import write_predictions
    from prodcat.model.predictor import Predictor

    if out_file.suffix.lower() not in (".csv", ".jsonl"):
        fail(f"--out {out_file}: expected a .csv or .jsonl file name")
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    shown = parse_modalities_or_exit(modalities)
    loaded = load_model_or_exit(model_dir)
    # The predictor decodes each photo anyway, and one that fails is answered from the title:
    # loading only checks that the files exist, so an unreadable photo does not reject its row.
    cat = load_catalogue_or_exit(catalogue, mapping, require_labels=False, verify_images=False)
    answers = Predictor(loaded).predict_products(
        cat.products,
        min_confidence=min_confidence,
        threshold=threshold,
        modalities=shown,
        explain=explain,
    )
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
    write_predictions(out_file, answers + rejected, cat.products)
    without_photo = sum(bool(a.error) for a in answers)
    counts = {d: sum(a.decision == d for a in answers) for d in DECISIONS}
    line = ", ".join(f"{d} {n:,}" for d, n in counts.items())
    if cat.labelled:
        pairs = zip(answers, cat.products, strict=True)
        correct = sum(a.category == _truth(p.label) for a, p in pairs)
        line += f"; {correct:,} of {len(answers):,} correct (the file has labels)"
    out.print(
        f"{len(answers):,} products labelled, {len(rejected):,} rows rejected "
        f"({without_photo:,} answered without their photo): {out_file}\n{line}"
    )


def _truth(label: tuple[str, ...] | None) -> str | None:
    from prodcat.taxonomy.tree import format_path

    return format_path(label) if label else None


def serve_cmd(
    model_dir: ModelDir,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(metavar="N", help="Worker processes, each with its own model.")
    ] = 1,
    log_level: Annotated[str, typer.Option(metavar="LEVEL", help="uvicorn log level.")] = "info",
) -> None:
    """Serve predictions over HTTP: POST /v1/predict, /v1/predict/batch; GET /v1/model,
    /healthz, /metrics. Limits and API keys come from PRODCAT_* variables or a .env file."""
    # prodcat.serving imports FastAPI on import: only when the command runs.
    from prodcat.serving.command import serve

    if (model_dir / "model.json").is_file():  # else `serve` says what is wrong
        out.print(
            f"serving {model_dir}: POST http://{host}:{port}/v1/predict, the API's pages at "
            f"http://{host}:{port}/docs (Ctrl+C stops it)"
        )
    serve(model_dir, host, port, workers, log_level)


def register(app: typer.Typer) -> None:
    app.command("predict", short_help="Label a file of products into a CSV or JSONL.")(predict_cmd)
    app.command("serve", short_help="Serve predictions over HTTP (the REST API).")(serve_cmd)
