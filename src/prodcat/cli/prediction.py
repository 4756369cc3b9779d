"""`prodcat predict` (label a file of products) and `prodcat serve` (the REST API)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prodcat.cli.common import (
    Engine,
    IdColumn,
    ImageColumn,
    LabelColumn,
    LabelColumns,
    Modalities,
    ModelDir,
    RayAddress,
    Separator,
    TextColumns,
    Threshold,
    Workers,
    column_mapping,
    fail,
    load_catalogue_or_exit,
    load_model_or_exit,
    out,
)
from prodcat.cli.training import parse_modalities_or_exit

if TYPE_CHECKING:
    from prodcat.catalogue import ColumnMapping
    from prodcat.model.bundle import Model
    from prodcat.model.predictions_file import Target


def predict_cmd(
    model_dir: ModelDir,
    catalogue: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="Products to label (labels not needed): a table, a folder of shards or a tree.",
        ),
    ],
    out_file: Annotated[
        str,
        typer.Option(
            "--out",
            metavar="OUTPUT",
            help="Predictions: a .parquet, .csv or .jsonl file, or a folder of shards "
            "('preds/' Parquet, 'preds.csv/' CSV).",
        ),
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
    engine: Engine = "local",
    ray_address: RayAddress = None,
    workers: Workers = None,
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
    feature cache, no torch), the path the REST API takes. --engine ray spreads the work over a
    Ray cluster with the same answers (docs/scaling.md)."""
    from prodcat.model.predictions_file import parse_target

    try:
        target = parse_target(out_file)
    except ValueError as exc:
        fail(str(exc))
    mapping = column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    shown = parse_modalities_or_exit(modalities)
    loaded = load_model_or_exit(model_dir)  # a bad model fails here, before any cluster starts
    if engine == "ray":
        if explain:
            fail("--explain works with --engine local only (the Ray engine writes no reasons yet)")
        options = (min_confidence, threshold, shown)
        line = _predict_ray(model_dir, catalogue, target, mapping, options, ray_address, workers)
    elif engine == "local":
        if ray_address is not None or workers is not None:
            fail("--ray-address and --workers need --engine ray")
        line = _predict_local(
            loaded, catalogue, target, mapping, shown, min_confidence, threshold, explain
        )
    else:
        fail(f"--engine {engine}: expected local or ray")
    out.print(line)


def _predict_local(
    loaded: Model,
    catalogue: Path,
    target: Target,
    mapping: ColumnMapping,
    shown: frozenset[str] | None,
    min_confidence: float | None,
    threshold: float | None,
    explain: bool = False,
) -> str:
    from prodcat.gate.gate import DECISIONS
    from prodcat.model.predictions_file import PredictionsWriter, Tally, prediction_records
    from prodcat.model.predictions_file import rejected_prediction as rejected_row
    from prodcat.model.predictor import Predictor

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
    rejected = [rejected_row(pr.id or f"line {pr.row}", pr.message) for pr in cat.rejected]
    labelled = any(p.label for p in cat.products)
    records = prediction_records(answers + rejected, cat.products, labelled)
    tally = Tally(DECISIONS)
    tally.add(records)
    with PredictionsWriter(target, labelled, explained=explain) as writer:
        writer.write(records)
    return tally.summary(target.path, cat.labelled)


def _predict_ray(
    model_dir: Path,
    catalogue: Path,
    target: Target,
    mapping: ColumnMapping,
    options: tuple[float | None, float | None, frozenset[str] | None],
    address: str | None,
    workers: int | None,
) -> str:
    from prodcat.catalogue import CatalogueError
    from prodcat.distributed import RayEngineError
    from prodcat.distributed.predict import PredictOptions, predict_on_ray

    try:
        run = predict_on_ray(
            model_dir,
            catalogue,
            target,
            mapping,
            PredictOptions(*options),
            address=address,
            workers=workers,
        )
    except (CatalogueError, RayEngineError) as exc:
        fail(str(exc))
    return run.tally.summary(target.path, run.labelled)


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
    # uvicorn, FastAPI and the model are imported only when the command runs.
    from prodcat.serving.command import serve

    if (model_dir / "model.json").is_file():  # else `serve` says what is wrong
        out.print(
            f"serving {model_dir}: POST http://{host}:{port}/v1/predict, the API's pages at "
            f"http://{host}:{port}/docs (Ctrl+C stops it)"
        )
    serve(model_dir, host, port, workers, log_level)


def register(app: typer.Typer) -> None:
    app.command("predict", short_help="Label a file of products into Parquet, CSV or JSONL.")(
        predict_cmd
    )
    app.command("serve", short_help="Serve predictions over HTTP (the REST API).")(serve_cmd)
