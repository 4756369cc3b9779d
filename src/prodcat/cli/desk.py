"""`prodcat queue` and `prodcat review ...`: the desk's commands (registered by prodcat.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from prodcat.cli import common
from prodcat.cli.common import DEFAULT_DB

DbUrl = Annotated[
    str,
    typer.Option(
        "--db",
        metavar="URL",
        envvar="PRODCAT_DESK_DB",
        help="sqlite:///file.db (default) or postgresql://...",
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
        common.fail(f"cannot open the desk database {url!r}: {exc}")


def queue_cmd(
    model_dir: common.ModelDir,
    catalogue: Annotated[
        Path,
        typer.Argument(metavar="CATALOGUE", help="Products to route to people or auto-label."),
    ],
    db: DbUrl = DEFAULT_DB,
    cache_dir: common.CacheDir = None,
    id_column: common.IdColumn = "id",
    text_column: common.TextColumns = None,
    image_column: common.ImageColumn = "image",
    label_column: common.LabelColumn = "category",
    label_columns: common.LabelColumns = None,
    separator: common.Separator = ">",
) -> None:
    """Queue the products the model is unsure of for people, with its top-5 suggestions.

    Products it is unsure of (review / unknown) wait for a person, most uncertain first; the
    accepted ones are recorded as auto-labelled. Re-running adds only new products and re-scores
    unanswered ones with this model."""
    from prodcat.desk.queue import build_queue
    from prodcat.features.cache import FeatureCache

    mapping = common.column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    model = common.load_model_or_exit(model_dir)
    cat = common.load_catalogue_or_exit(catalogue, mapping, require_labels=False)
    database = _db(db)
    result = build_queue(database, model, cat, cache=FeatureCache(cache_dir))
    common.out.print(
        f"{result.queued:,} products for people, {result.auto_labelled:,} auto-labelled; "
        f"{result.added:,} new, {result.rescored:,} re-scored by this model, "
        f"{result.unchanged:,} unchanged; {len(cat.rejected):,} catalogue rows rejected"
    )
    for pid, why in list(result.failed.items())[:20]:
        common.warn(f"not queued: {why}", f"product {pid}:")
    for problem in cat.rejected[:20]:
        common.warn(problem.message, f"row {problem.row}:")


@review_app.callback()
def review_cmd(
    ctx: typer.Context,
    db: DbUrl = DEFAULT_DB,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8000,
) -> None:
    """Serve the review desk (log in at http://HOST:PORT/)."""
    if ctx.invoked_subcommand is not None:
        return
    from prodcat.desk.app import serve

    _db(db).dispose()  # migrate, or fail with a clear message before the server starts
    common.out.print(f"review desk: http://{host}:{port}/  (database {db}; Ctrl+C stops it)")
    serve(db, host, port)


@review_app.command("add-user")
def add_user_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Login name.")],
    role: Annotated[str, typer.Option(metavar="ROLE", help="reviewer or admin.")] = "reviewer",
    password: Annotated[
        str,
        typer.Option(
            metavar="TEXT",
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
        common.fail(str(exc))
    common.out.print(f"user {name!r} ({role}) saved")


@review_app.command("export", short_help="Write every answer to a labels CSV.")
def export_cmd(
    out_file: Annotated[Path, typer.Option("--out", metavar="CSV", help="labels CSV to write.")],
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Write every answer: id, category, reviewer, time, model suggestion, agreed, new_category."""
    from prodcat.desk.exchange import export_labels

    n = export_labels(_db(db), out_file)
    common.out.print(f"{n:,} answers: {out_file}")


@review_app.command("export-labelstudio", short_help="Export the queue as Label Studio tasks.")
def export_labelstudio_cmd(
    out_file: Annotated[
        Path, typer.Option("--out", metavar="JSON", help="Label Studio tasks JSON to write.")
    ],
    image_url: Annotated[
        str,
        typer.Option(metavar="URL", help="Image URL per task; {id} is the product id."),
    ] = "/image/{id}",
    config: Annotated[
        Path | None,
        typer.Option(metavar="XML", help="Also write the labelling interface XML here."),
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


@review_app.command("import-labelstudio", short_help="Import Label Studio annotations as answers.")
def import_labelstudio_cmd(
    export: Annotated[
        Path,
        typer.Argument(metavar="EXPORT", help="Label Studio JSON export (with annotations)."),
    ],
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Import Label Studio annotations as answers (reviewer 'labelstudio:<annotator>')."""
    from prodcat.desk.exchange import import_labelstudio

    try:
        result = import_labelstudio(_db(db), export)
    except ValueError as exc:
        common.fail(str(exc))
    common.out.print(
        f"{result.added:,} answers imported, {result.already:,} already there, "
        f"{len(result.problems):,} left out"
    )
    for line in result.problems[:20]:
        common.warn(line)


def register(app: typer.Typer) -> None:
    app.command("queue", short_help="Queue what the model is unsure of for people.")(queue_cmd)
    app.add_typer(
        review_app, name="review", short_help="Serve the review desk; add users, export, import."
    )
