"""The overview of a loaded catalogue: sizes, classes, long tail, duplicates and problems."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from prodcat.catalogue.classes import default_training_classes
from prodcat.catalogue.products import PROBLEM_KINDS, Catalogue, Problem
from prodcat.taxonomy.tree import format_path

# --------------------------------------------------------------------------------------------------
# Summary


def summarise(catalogue: Catalogue) -> dict[str, Any]:
    """A JSON-serialisable overview: sizes, classes, long tail, duplicate photos, problems."""
    products = catalogue.products
    rejected, warnings = catalogue.rejected, catalogue.warnings
    sizes = Counter(p.label for p in products if p.label is not None)
    ordered = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    n_labelled = sum(sizes.values())
    depth = max(map(len, sizes), default=0)
    photo_groups = [
        n for n in Counter(p.image_sha256 for p in products if p.image_sha256).values() if n > 1
    ]
    kinds = Counter(p.kind for p in catalogue.problems)
    return {
        "source": str(catalogue.source),
        "n_rows": len(products) + len(rejected),
        "n_products": len(products),
        "n_rejected": len(rejected),
        "n_warnings": len(warnings),
        "labelled": catalogue.labelled,
        "classes_per_level": [
            len({label[:k] for label in sizes if len(label) >= k}) for k in range(1, depth + 1)
        ],
        "n_classes": len(sizes),
        "class_sizes": {format_path(label): n for label, n in ordered},
        "long_tail": {
            "top10_share": sum(n for _, n in ordered[:10]) / n_labelled if n_labelled else 0.0,
            "n_classes_lt_10": sum(n < 10 for n in sizes.values()),
            "n_classes_lt_20": sum(n < 20 for n in sizes.values()),
        },
        "duplicate_photos": {
            "n_groups": len(photo_groups),
            "n_products": sum(photo_groups),
            "largest_group": max(photo_groups, default=0),
        },
        "problems_by_kind": {kind: kinds[kind] for kind in PROBLEM_KINDS if kinds[kind]},
        "training": _training_plan(catalogue) if n_labelled else None,
        "rejected": [_problem_dict(p) for p in rejected],
        "warnings": [_problem_dict(p) for p in warnings],
    }


def _training_plan(catalogue: Catalogue) -> dict[str, Any]:
    """What `prodcat train` with default options would learn and leave out (train part counts)."""
    choice = default_training_classes(catalogue.products)
    return {
        "rule": choice.rule,
        "n_learned": len(choice.learned),
        "n_left_out": len(choice.left_out),
        "left_out": choice.left_out,
    }


def _problem_dict(problem: Problem) -> dict[str, Any]:
    return {"id": problem.id, "row": problem.row, "kind": problem.kind, "message": problem.message}


def format_summary(
    summary: dict[str, Any], *, max_classes: int = 12, max_problems: int = 10
) -> RenderableType:
    """A terminal report of `summarise`'s output: overview, largest classes, first problems."""
    parts: list[RenderableType] = [_overview_table(summary)]
    if summary["class_sizes"]:
        parts.append(_classes_table(summary, max_classes))
    for key, style in (("rejected", "red"), ("warnings", "yellow")):
        if summary[key]:
            parts.append(_problems_table(summary[key], key, style, max_problems))
    return Group(*parts)


def _overview_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Catalogue check", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", Text(summary["source"]))  # Text: no rich markup in user data
    table.add_row("products", f"{summary['n_products']:,} of {summary['n_rows']:,} rows accepted")
    rejected = f"{summary['n_rejected']:,}"
    table.add_row("rejected", f"[red]{rejected}[/red]" if summary["n_rejected"] else rejected)
    table.add_row("warnings", f"{summary['n_warnings']:,}")
    if summary["labelled"]:
        levels = " / ".join(f"{n:,}" for n in summary["classes_per_level"])
        table.add_row("classes", f"{summary['n_classes']:,} (nodes per level: {levels})")
        tail = summary["long_tail"]
        table.add_row(
            "long tail",
            f"the 10 largest classes hold {tail['top10_share']:.0%} of products; "
            f"{_count(tail['n_classes_lt_10'], 'class', 'classes')} under 10 products, "
            f"{tail['n_classes_lt_20']:,} under 20",
        )
        if summary.get("training"):
            table.add_row("training", _training_text(summary["training"], summary["n_classes"]))
    else:
        table.add_row("classes", "none: the catalogue is unlabelled")
    dup = summary["duplicate_photos"]
    if dup["n_groups"]:
        table.add_row(
            "duplicate photos",
            f"{_count(dup['n_groups'], 'group')} of byte-identical photos "
            f"({dup['n_products']:,} products, largest {dup['largest_group']}); "
            "each group stays in one split",
        )
    if summary["problems_by_kind"]:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in summary["problems_by_kind"].items())
        table.add_row("problems", kinds)
    return table


def _training_text(plan: dict[str, Any], n_classes: int, limit: int = 12) -> Text:
    """'learns 20 of 29 classes by default (...); leaves out 9, ...: A (2), B (0), ...'."""
    text = (
        f"learns {plan['n_learned']:,} of {n_classes:,} classes by default (those with "
        f"{plan['rule']})"
    )
    left_out: dict[str, int] = plan["left_out"]
    if left_out:
        named = [f"{name} ({n:,})" for name, n in list(left_out.items())[:limit]]
        if len(left_out) > limit:
            named.append(f"... {len(left_out) - limit:,} more (--json lists them)")
        text += (
            f"; leaves out {len(left_out):,}, with their training products: {', '.join(named)}; "
            "--min-class-count N changes the floor"
        )
    return Text(text)  # Text: class names are user data, not rich markup


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def _classes_table(summary: dict[str, Any], limit: int) -> Table:
    sizes: dict[str, int] = summary["class_sizes"]
    total = sum(sizes.values())
    table = Table(title="Largest classes", title_justify="left")
    table.add_column("class")
    table.add_column("products", justify="right")
    table.add_column("share", justify="right")
    for name, n in list(sizes.items())[:limit]:
        table.add_row(Text(name), f"{n:,}", f"{n / total:.1%}")
    if len(sizes) > limit:
        rest = list(sizes.values())[limit:]
        table.add_row(
            f"... {len(rest)} more", f"{sum(rest):,}", f"{sum(rest) / total:.1%}", style="dim"
        )
    return table


def _problems_table(problems: list[dict[str, Any]], title: str, style: str, limit: int) -> Table:
    table = Table(title=f"{title.capitalize()} ({len(problems):,})", title_justify="left")
    table.add_column("kind", style=style, no_wrap=True)
    table.add_column("message", overflow="fold")
    for problem in problems[:limit]:
        table.add_row(problem["kind"], Text(problem["message"]))
    if len(problems) > limit:
        table.add_row("", f"... and {len(problems) - limit:,} more", style="dim")
    return table
