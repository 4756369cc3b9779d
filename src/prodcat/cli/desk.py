"""`prodcat queue` and `prodcat review ...`: the desk's commands (registered by prodcat.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from prodcat.cli import common
from prodcat.desk.db import DEFAULT_DB

DbUrl = Annotated[
    str,
    typer.Option(
        "--db", envvar="PRODCAT_DESK_DB", help="sqlite:///file.db (default) or postgresql://..."
    ),
]

review_app = typer.Typer(
    help="The review desk: serve it (no sub-command), add users, export and import answers.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _db(url: str):  # type: ignore[no-untyped-def]
    from prodcat.desk.db import Database

    try:
        return Database(url)
    except Exception as exc:  # a bad URL or an unreachable server: say which, no traceback
        common.err.print(f"[red]error:[/red] cannot open the desk database {url!r}: {exc}")
        raise typer.Exit(2) from None


def queue_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from prodcat train.")],
    catalogue: Annotated[Path, typer.Argument(help="Products to route to people or auto-label.")],
    db: DbUrl = DEFAULT_DB,
    cache_dir: common.CacheDir = None,
    id_column: common.IdColumn = "id",
    text_column: common.TextColumns = None,
    image_column: common.ImageColumn = "image",
    label_column: common.LabelColumn = "category",
    label_columns: common.LabelColumns = None,
    separator: common.Separator = ">",
) -> None:
    """Queue the products the model is unsure of (review / unknown) with their top-5
    suggestions; record the accepted ones as auto-labelled. Re-running adds only new products
    and re-scores unanswered ones with this model (most uncertain first)."""
    from prodcat.desk.queue import build_queue
    from prodcat.features.cache import FeatureCache

    mapping = common.column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    model = common.load_model_or_exit(model_dir)
    cat = common.load_catalogue_or_exit(catalogue, mapping)
    database = _db(db)
    result = build_queue(database, model, cat, cache=FeatureCache(cache_dir))
    common.out.print(
        f"{result.queued:,} products for people, {result.auto_labelled:,} auto-labelled; "
        f"{result.added:,} new, {result.rescored:,} re-scored by this model, "
        f"{result.unchanged:,} unchanged; {len(cat.rejected):,} catalogue rows rejected"
    )
    for pid, why in list(result.failed.items())[:20]:
        common.err.print(f"[yellow]product {pid}:[/yellow] not queued: {why}")
    for problem in cat.rejected[:20]:
        common.err.print(f"[yellow]row {problem.row}:[/yellow] {problem.message}")


@review_app.callback()
def review_cmd(
    ctx: typer.Context,
    db: DbUrl = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the review desk (log in at http://HOST:PORT/)."""
    if ctx.invoked_subcommand is not None:
        return
    from prodcat.desk.app import serve

    _db(db).dispose()  # migrate, or fail with a clear message before the server starts
    common.out.print(f"review desk: http://{host}:{port}/  (database {db})")
    serve(db, host, port)


@review_app.command("add-user")
def add_user_cmd(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="reviewer or admin.")] = "reviewer",
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="PRODCAT_DESK_PASSWORD",
            help="Asked for when not given (or set PRODCAT_DESK_PASSWORD).",
        ),
    ] = "",
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Create an account (or reset its password and role)."""
    from prodcat.desk.auth import AuthError, add_user

    try:
        add_user(_db(db), name, password, role)
    except AuthError as exc:
        common.err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    common.out.print(f"user {name!r} ({role}) saved")


@review_app.command("export")
def export_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="labels CSV to write.")],
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Write every answer: id, category, reviewer, time, model suggestion, agreed, new_category."""
    from prodcat.desk.exchange import export_labels

    n = export_labels(_db(db), out_file)
    common.out.print(f"{n:,} answers: {out_file}")


@review_app.command("export-labelstudio")
def export_labelstudio_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="Label Studio tasks JSON to write.")],
    image_url: Annotated[
        str,
        typer.Option(help="Image URL per task; {id} is the product id."),
    ] = "/image/{id}",
    config: Annotated[
        Path | None, typer.Option(help="Also write the labelling interface XML here.")
    ] = None,
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Export the queue as Label Studio tasks, the model's answer as a prediction."""
    from prodcat.desk.exchange import labelstudio_config, labelstudio_tasks
    from prodcat.desk.queue import taxonomy

    database = _db(db)
    tasks = labelstudio_tasks(database, image_url)
    out_file.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    common.out.print(f"{len(tasks):,} tasks: {out_file}")
    if config is not None:
        config.write_text(labelstudio_config(taxonomy(database)), encoding="utf-8")
        common.out.print(f"labelling interface: {config}")


@review_app.command("import-labelstudio")
def import_labelstudio_cmd(
    export: Annotated[Path, typer.Argument(help="Label Studio JSON export (with annotations).")],
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Import Label Studio annotations as answers (reviewer 'labelstudio:<annotator>')."""
    from prodcat.desk.exchange import import_labelstudio

    try:
        result = import_labelstudio(_db(db), export)
    except ValueError as exc:
        common.err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    common.out.print(
        f"{result.added:,} answers imported, {result.already:,} already there, "
        f"{len(result.problems):,} left out"
    )
    for line in result.problems[:20]:
        common.err.print(f"[yellow]{line}[/yellow]")


def register(app: typer.Typer) -> None:
    app.command("queue")(queue_cmd)
    app.add_typer(review_app, name="review")
