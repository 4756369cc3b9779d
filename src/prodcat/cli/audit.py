"""`prodcat audit`: which labels of a catalogue are probably wrong, which classes overlap, which
duplicates disagree; optionally sent to the review desk as label checks (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prodcat.cli import common

if TYPE_CHECKING:
    from prodcat.audit import AuditResult

DEFAULT_FOLDS = 5  # prodcat.audit.run.DEFAULT_FOLDS (copied: --help imports nothing)
RANKINGS = ("self_confidence", "normalized_margin")  # prodcat.audit.issues.RANKINGS
SHOWN = 10  # suspects printed on the terminal (the JSON and the report have every one)


def audit_cmd(
    catalogue: Annotated[
        Path, typer.Argument(metavar="CATALOGUE", help="Labelled catalogue to check.")
    ],
    json_out: Annotated[
        Path,
        typer.Option("--json", metavar="FILE", help="Write the suspects and the figures here."),
    ],
    report: Annotated[
        Path | None, typer.Option(metavar="FOLDER", help="Also write the HTML report here.")
    ] = None,
    folds: Annotated[
        int, typer.Option(metavar="K", help="Folds of the out-of-fold scores (2 or more).")
    ] = DEFAULT_FOLDS,
    rank_by: Annotated[
        str,
        typer.Option(metavar="RANKING", help="self_confidence (default) or normalized_margin."),
    ] = RANKINGS[0],
    to_desk: Annotated[
        bool,
        typer.Option("--to-desk", help="Queue the suspects on the review desk as label checks."),
    ] = False,
    db: Annotated[
        str, typer.Option(metavar="URL", help="Desk database (with --to-desk).")
    ] = common.DEFAULT_DB,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed.")] = 0,
    cache_dir: common.CacheDir = None,
    id_column: common.IdColumn = "id",
    text_column: common.TextColumns = None,
    image_column: common.ImageColumn = "image",
    label_column: common.LabelColumn = "category",
    label_columns: common.LabelColumns = None,
    separator: common.Separator = ">",
) -> None:
    """Find the labels that are probably wrong: every product scored out of fold, then confident
    learning (cleanlab); also the classes that overlap and the duplicates that disagree."""
    # Encoding the catalogue needs the training parts; cleanlab comes with them.
    common.require_extra("prodcat audit", "train", (*common.TRAIN_MODULES, "cleanlab"))
    from prodcat.audit import AuditError, AuditOptions, run_audit
    from prodcat.encoders.registry import get_encoder
    from prodcat.features.cache import FeatureCache

    mapping = common.column_mapping(
        id_column, text_column, image_column, label_column, label_columns, separator
    )
    try:
        options = AuditOptions(folds=folds, rank_by=rank_by, seed=seed)
    except AuditError as exc:
        common.fail(str(exc))
    cache = FeatureCache(cache_dir)
    cached = cache.store(get_encoder(options.image_encoder).version).__contains__
    cat = common.load_catalogue_or_exit(catalogue, mapping, decoded=cached)
    try:
        result = run_audit(cat, cache, options)
    except AuditError as exc:
        common.fail(str(exc))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result.as_json(), indent=1, ensure_ascii=False) + "\n")
    _print_summary(result, json_out)
    for problem in cat.rejected[:20]:
        common.warn(problem.message, f"row {problem.row}:")
    if report is not None:
        from prodcat.report.audit import write_audit_report

        page = write_audit_report(result, report, title=f"Label audit: {catalogue.name}")
        common.out.print(f"report: {page}")
    if to_desk:
        _send_to_desk(result, db)


def _print_summary(result: AuditResult, json_out: Path) -> None:
    common.out.print(
        f"audited {result.n_products:,} products: {len(result.issues):,} labels flagged, "
        f"estimated {result.estimated_error_rate:.2%} wrong (out-of-fold accuracy "
        f"{result.out_of_fold_accuracy:.2%}); {len(result.class_overlap):,} class pairs overlap; "
        f"{len(result.duplicates):,} duplicates disagree; {result.seconds['total']:.0f} s"
    )
    if result.not_audited:
        common.warn(
            ", ".join(f"{c} ({n})" for c, n in result.not_audited.items()),
            f"{len(result.not_audited):,} classes with fewer than {result.options.folds} "
            "products were not audited:",
        )
    for s in result.issues[:SHOWN]:
        common.out.print(f"  {s.id}: {s.given} -> {s.suggested} (score {s.score:.3f}) {s.title}")
    common.out.print(f"json: {json_out}")


def _send_to_desk(result: AuditResult, url: str) -> None:
    from prodcat.cli.desk import _db
    from prodcat.desk.label_checks import queue_label_checks

    sent = queue_label_checks(_db(url), result.issues, version=_version(result))
    common.out.print(
        f"desk: {sent.added:,} label checks added, {sent.updated:,} updated, {sent.answered:,} "
        f"already answered (left as they are); answers: prodcat review export --db {url}"
    )


def _version(result: AuditResult) -> str:
    o = result.options
    return f"audit-{o.folds}fold-{o.rank_by}-seed{o.seed}"


def register(app: typer.Typer) -> None:
    app.command("audit", short_help="Find labels that are probably wrong; send them to the desk.")(
        audit_cmd
    )
