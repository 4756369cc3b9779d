"""The label audit's HTML report (`prodcat audit --report`): one self-contained page.

The headline figures, a gallery of the top suspects (photo, title, given and suggested category,
score), the classes that overlap, the estimated error rate per class and the duplicates that
disagree. Built from the report's elements and page, so it looks and escapes like the others.
"""

from __future__ import annotations

from pathlib import Path

from prodcat.audit import AuditResult
from prodcat.report.class_sections import _photo
from prodcat.report.elements import escape, note, percent, table
from prodcat.report.html import _page

GALLERY_SIZE = 60  # suspects shown with their photos (the JSON has every one)
MAX_ROWS = 100  # rows of the overlap, per-class and duplicate tables


def write_audit_report(result: AuditResult, out_dir: str | Path, *, title: str) -> Path:
    """Write ``out_dir/index.html`` and return its path."""
    sections = [
        ("headline", "Headline", headline_section(result)),
        ("suspects", "Labels that are probably wrong", suspects_section(result)),
        ("overlap", "Classes that overlap", overlap_section(result)),
        ("per-class", "Estimated wrong labels per class", per_class_section(result)),
        ("duplicates", "Duplicates that disagree", duplicates_section(result)),
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(_page(title, sections, kind="label audit"), encoding="utf-8")
    return path


def headline_section(result: AuditResult) -> str:
    cards = [
        ("products audited", f"{result.n_products:,}"),
        ("labels flagged", f"{len(result.issues):,}"),
        ("estimated wrong labels", percent(result.estimated_error_rate)),
        ("out-of-fold accuracy", percent(result.out_of_fold_accuracy)),
        ("duplicates that disagree", f"{len(result.duplicates):,}"),
    ]
    html = "".join(
        f'<div class="card"><div class="value">{value}</div>'
        f'<div class="label">{escape(label)}</div></div>'
        for label, value in cards
    )
    text = (
        f"Every product was scored by a model that never saw it ({result.options.folds} folds); "
        "confident learning (cleanlab) flags the labels that disagree with what the photo and "
        f"title say, ranked by {result.options.rank_by.replace('_', ' ')}."
    )
    left_out = ""
    if result.not_audited:
        named = ", ".join(f"{c} ({n})" for c, n in result.not_audited.items())
        left_out = note(
            f"Not audited: {len(result.not_audited)} classes with fewer than "
            f"{result.options.folds} labelled products: {named}."
        )
    return f'<div class="cards">{html}</div>{note(text)}{left_out}'


def suspects_section(result: AuditResult) -> str:
    if not result.issues:
        return note("No label was flagged.")
    cards = []
    for s in result.issues[:GALLERY_SIZE]:
        cards.append(
            '<div class="error">'
            f"{_photo(s.image)}"
            '<div class="body">'
            f'<div class="title">{escape(s.title or "(no title)")}</div>'
            f'<div class="id">id {escape(s.id)}</div>'
            f'<div>given: <span class="pred">{escape(s.given)}</span></div>'
            f'<div>suggested: <span class="true">{escape(s.suggested)}</span></div>'
            f'<span class="confidence">score {s.score:.3f}</span>'
            "</div></div>"
        )
    text = (
        f"The {min(len(result.issues), GALLERY_SIZE)} most suspect of {len(result.issues):,} "
        "flagged labels. Score: 1 - cleanlab's label quality (1 = surely wrong)."
    )
    return f'{note(text)}<div class="gallery">{"".join(cards)}</div>'


def overlap_section(result: AuditResult) -> str:
    if not result.class_overlap:
        return note("No pair of classes overlaps.")
    rows = [
        [
            escape(o["classes"][0]),
            escape(o["classes"][1]),
            f"{int(o['n_products']):,}",
            percent(o["share_of_class"][0]),
            percent(o["share_of_class"][1]),
        ]
        for o in result.class_overlap[:MAX_ROWS]
    ]
    text = (
        "Pairs of classes the data cannot tell apart: products that could be either (cleanlab's "
        "confident joint, both directions), and what share of each class they are. Candidates "
        "to merge, split or write a rule for."
    )
    headers = [
        "class A",
        "class B",
        "products",
        "share of A (could be B)",
        "share of B (could be A)",
    ]
    return note(text) + table(headers, rows, {2, 3, 4})


def per_class_section(result: AuditResult) -> str:
    ranked = sorted(result.class_error_rates.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [[escape(c), percent(r)] for c, r in ranked[:MAX_ROWS] if r > 0]
    if not rows:
        return note("No class is estimated to hold wrong labels.")
    text = "The estimated share of each class's given labels that are wrong, highest first."
    return note(text) + table(["class", "estimated wrong"], rows, {1})


def duplicates_section(result: AuditResult) -> str:
    if not result.duplicates:
        return note("No duplicates with different categories.")
    rows = [
        [
            escape(d.kind),
            escape(", ".join(d.ids)),
            escape(" / ".join(d.categories)),
            f"{d.similarity:.3f}",
        ]
        for d in result.duplicates[:MAX_ROWS]
    ]
    text = (
        f"{len(result.duplicates):,} groups of byte-identical photos or nearly identical photo + "
        "title pairs that carry different categories (the first "
        f"{min(MAX_ROWS, len(result.duplicates))} shown)."
    )
    return note(text) + table(["kind", "ids", "categories", "similarity"], rows, {3})
