"""`prodcat queue`, `prodcat review ...` and `prodcat retune`: the desk's commands (registered by
prodcat.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prodcat.cli import common
from prodcat.cli.common import DEFAULT_DB

if TYPE_CHECKING:
    from prodcat.desk.retune import RetuneResult

DEFAULT_AUDIT_RATE = 0.02  # prodcat.desk.queue.DEFAULT_AUDIT_RATE (--help imports no desk module)
DEFAULT_PROPOSAL_ANSWERS = 3  # prodcat.desk.queue.DEFAULT_PROPOSAL_ANSWERS

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
    audit_rate: Annotated[
        float,
        typer.Option(
            metavar="SHARE",
            min=0.0,
            max=1.0,
            help="Share of the accepted products also sent to people as blind audits.",
        ),
    ] = DEFAULT_AUDIT_RATE,
    seed: Annotated[
        int | None,
        typer.Option(metavar="N", help="Make the audit draw reproducible (default: random)."),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain/--no-explain",
            help="Store the model's reasons for the queued products; the desk shows them.",
        ),
    ] = True,
    proposal_answers: Annotated[
        int,
        typer.Option(
            metavar="K",
            min=1,
            help="Offer a category proposed at the desk among the suggestions once it has K "
            "answers (added to the model without retraining, never accepted).",
        ),
    ] = DEFAULT_PROPOSAL_ANSWERS,
) -> None:
    """Queue the products the model is unsure of for people, with its top-5 suggestions.

    Products it is unsure of (review / unknown) wait for a person, most uncertain first; the
    accepted ones are recorded as auto-labelled, except a random --audit-rate share of them,
    queued as blind audits (shown like any other product) that measure the accepted accuracy.
    Re-running adds only new products and re-scores unanswered ones with this model."""
    from prodcat.desk.queue import build_queue
    from prodcat.features.cache import FeatureCache

    mapping = common.column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    model = common.load_model_or_exit(model_dir)
    cat = common.load_catalogue_or_exit(catalogue, mapping, require_labels=False)
    database = _db(db)
    result = build_queue(
        database,
        model,
        cat,
        cache=FeatureCache(cache_dir),
        audit_rate=audit_rate,
        seed=seed,
        explain=explain,
        proposal_answers=proposal_answers,
    )
    if result.offered:
        common.out.print(f"proposed categories now suggested: {', '.join(result.offered)}")
    common.out.print(
        f"{result.queued:,} products for people ({result.audits:,} of them blind audits of "
        f"accepted ones), {result.auto_labelled:,} auto-labelled; "
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


@review_app.command("stats", short_help="Progress, agreement and the blind audits' figures.")
def stats_cmd(
    db: DbUrl = DEFAULT_DB,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every figure as JSON (key audit: the audits).")
    ] = False,
) -> None:
    """Progress, agreement, and per model version the accepted accuracy the audits measured."""
    from prodcat.desk.stats import progress

    figures = progress(_db(db))
    if as_json:
        typer.echo(json.dumps(figures, indent=1, ensure_ascii=False))
        return
    common.out.print(
        f"{figures['done']:,} of {figures['queued']:,} queued products done, "
        f"{figures['left']:,} left; {figures['auto_labelled']:,} auto-labelled; "
        f"{figures['answers']:,} answers"
    )
    audit = figures["audit"]
    common.out.print(
        f"blind audits ({audit['waiting']:,} waiting for an answer; 95% intervals, "
        f"{audit['method']}):"
    )
    for name, row in [("all models", audit["overall"]), *audit["by_model"].items()]:
        common.out.print(f"  {name}: {_audit_line(row)}")


def _audit_line(row: dict[str, Any]) -> str:
    if not row["n"]:
        return f"no audit answered yet; {row['auto_labelled']:,} auto-labelled"
    return (
        f"{row['correct']:,} of {row['n']:,} audits agreed: accepted accuracy "
        f"{100 * row['accuracy']:.2f}% [{100 * row['low']:.2f}%, {100 * row['high']:.2f}%]; "
        f"of {row['auto_labelled']:,} auto-labelled, about {row['implied_wrong']:,.0f} wrong "
        f"[{row['implied_wrong_low']:,.0f}, {row['implied_wrong_high']:,.0f}]"
    )


def retune_cmd(
    model_dir: common.ModelDir,
    out: Annotated[
        Path,
        typer.Option("--out", metavar="FOLDER", help="New model folder (when the audits say so)."),
    ],
    db: DbUrl = DEFAULT_DB,
) -> None:
    """Raise the accept thresholds when the blind audits show the promise is not kept.

    Reads the audit answers for this model's version. Where the 95% upper bound of the audited
    accepted accuracy is below the gate's target, the threshold moves up to the lowest audited
    confidence that keeps the target, and a copy of the model with the new thresholds is written
    to --out (its gate says where they came from). Otherwise nothing changes."""
    from prodcat.desk.retune import RetuneError, retune

    model = common.load_model_or_exit(model_dir)
    try:
        result = retune(_db(db), model, out)
    except RetuneError as exc:
        common.fail(str(exc))
    common.out.print(_retune_summary(result))
    for case, verdict in result.cases.items():
        row = verdict.as_dict()
        moved = f"{verdict.old:.4f} -> {verdict.new:.4f}" if verdict.broken else "kept"
        common.out.print(
            f"  {case}: {row['correct']:,} of {row['n']:,} right "
            f"[{100 * verdict.low:.2f}%, {100 * verdict.high:.2f}%]; threshold {moved}"
        )
    if result.verdict != "untested":
        for case in result.unaudited:
            common.out.print(f"  {case}: no audit answered; threshold kept")
    if result.out is not None:
        common.out.print(f"new model: {result.out} (version {result.new_version})")


def _retune_summary(result: RetuneResult) -> str:
    target = f"{100 * result.target_accuracy:g}%"
    head = f"model version {result.model_version}, target {target}: "
    if result.verdict == "untested":
        return head + "no answered audit yet; nothing changed (queue with --audit-rate)"
    seen = (
        f"{result.correct:,} of {result.n:,} audits right, 95% interval "
        f"[{100 * result.low:.2f}%, {100 * result.high:.2f}%]"
    )
    if result.verdict == "kept":
        return head + seen + "; the promise holds, nothing changed"
    return head + seen + "; the promise is not kept: thresholds raised"


def register(app: typer.Typer) -> None:
    app.command("queue", short_help="Queue what the model is unsure of for people.")(queue_cmd)
    app.command("retune", short_help="Raise the accept thresholds when audits say so.")(retune_cmd)
    app.add_typer(
        review_app, name="review", short_help="Serve the review desk; add users, export, import."
    )
