"""The report's per-class sections: confusion, per-class scores, worst errors, out-of-class.

Each function reads `prodcat.training.metrics.evaluate`'s dict and returns an HTML fragment, or
None to leave its section out. The error gallery embeds each product's photo as a small JPEG.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue.images import ImageError, load_image
from prodcat.report.elements import (
    BLUE,
    GREY,
    ORANGE,
    escape,
    figure,
    note,
    percent,
    png,
    short_names,
    table,
)

THUMBNAIL_PX = 240  # gallery photos are shrunk to this (longer side) so the file stays small
MAX_OUT_OF_CLASS_LABELS = 15
# The confusion heatmap's cells: at most this many inches, and the whole matrix at most this wide,
# so the PNG (at elements.DPI) fits the page without being scaled down.
MAX_CELL_IN = 0.45
MATRIX_IN = 6.0
DARK_TEXT = "#1f2933"


def confusion_sections(metrics: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The heatmap when the model is small enough for one, else the top confusions table."""
    confusion = metrics.get("confusion")
    if confusion is not None and confusion.get("labels"):
        return [("confusion", "Confusion matrix", confusion_heatmap(confusion))]
    return [("confusions", "Top confusions", _top_confusions_table(metrics))]


def heatmap_font_size(n_classes: int) -> float:
    """Points for the counts in the cells: about half a cell's height, 7 to 11 points."""
    cell_pt = 72 * min(MAX_CELL_IN, MATRIX_IN / max(n_classes, 1))
    return round(max(7.0, min(11.0, 0.45 * cell_pt)), 1)


def confusion_heatmap(confusion: dict[str, Any]) -> str:
    labels = [str(c) for c in confusion["labels"]]
    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(labels)
    side = min(MAX_CELL_IN, MATRIX_IN / max(n, 1)) * n
    font = heatmap_font_size(n)
    with figure(side + 0.8, side) as (fig, ax):
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="equal")
        ax.set_xticks(range(n), short_names(labels), rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.spines[:].set_visible(False)
        for i, j in zip(*np.nonzero(counts), strict=True):
            # White on the dark cells, near-black on the light ones: both read at any share.
            color = "white" if share[i, j] > 0.5 else DARK_TEXT
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=font,
                fontweight="bold",
                color=color,
            )
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class")
        html_image = png(fig, "confusion matrix")
    text = (
        "Rows are true classes, columns predicted ones; the numbers are product counts and the "
        "colour is the share of the row, so the diagonal is each class's recall."
    )
    return note(text) + html_image


def _top_confusions_table(metrics: dict[str, Any]) -> str:
    confusions = metrics.get("top_confusions") or []
    if not confusions:
        return note("No in-class errors.")
    rows = [[escape(c["true"]), escape(c["pred"]), f"{int(c['count']):,}"] for c in confusions]
    text = "The most frequent mix-ups (true class taken for predicted class), largest first."
    return note(text) + table(["true class", "predicted class", "products"], rows, {2})


def per_class_section(metrics: dict[str, Any]) -> str | None:
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if not per_class:
        return None
    # Weakest first: the classes that need attention are at the top of the chart and table.
    ordered = sorted(per_class.items(), key=lambda kv: (kv[1]["f1"], -kv[1]["support"], kv[0]))
    rows = [
        [
            escape(name),
            percent(s["precision"]),
            percent(s["recall"]),
            percent(s["f1"]),
            f"{int(s['support']):,}",
        ]
        for name, s in ordered
    ]
    html_table = table(["class", "precision", "recall", "F1", "support"], rows, {1, 2, 3, 4})
    text = "Classes sorted by F1, weakest first; support is the number of test products."
    return (
        f"{note(text)}{_per_class_chart(ordered)}"
        f"<details><summary>Table of {len(rows)} classes</summary>{html_table}</details>"
    )


def _per_class_chart(ordered: list[tuple[str, dict[str, Any]]]) -> str:
    n = len(ordered)
    names = [f"{name} ({int(s['support'])})" for name, s in ordered]
    y = np.arange(n)[::-1]  # the first (weakest) class on top
    height = 0.26
    with figure(9.5, 0.36 * n + 1.2) as (fig, ax):
        for offset, key, color in (
            (height, "precision", GREY),
            (0.0, "recall", ORANGE),
            (-height, "f1", BLUE),
        ):
            values = [float(s[key]) for _, s in ordered]
            ax.barh(y + offset, values, height=height, color=color, label=key.replace("f1", "F1"))
        ax.set_yticks(y, names, fontsize=8 if n <= 60 else 7)
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.tick_params(axis="x", top=True, labeltop=True)  # a scale at both ends of tall charts
        ax.grid(axis="x", color="#e1e5eb", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.legend(loc="lower right", ncols=3, frameon=False, bbox_to_anchor=(1.0, 1.0 + 0.5 / n))
        return png(fig, "precision, recall and F1 per class")


def _photo(path: object) -> str:
    """The product photo as an embedded JPEG thumbnail, or a placeholder; never raises."""
    if not path:
        return '<div class="missing">no photo</div>'
    try:
        image = load_image(Path(str(path)), draft_size=THUMBNAIL_PX)
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    except (ImageError, OSError, ValueError):
        return '<div class="missing">photo not found</div>'
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="photo" alt="product photo" src="data:image/jpeg;base64,{data}">'


def gallery_section(metrics: dict[str, Any]) -> str:
    errors = metrics.get("worst_errors") or []
    if not errors:
        return note("No in-class errors.")
    cards = []
    for error in errors:
        title = error.get("title") or "(no title)"
        cards.append(
            '<div class="error">'
            f"{_photo(error.get('image'))}"
            '<div class="body">'
            f'<div class="title">{escape(title)}</div>'
            f'<div class="id">id {escape(error.get("id", ""))}</div>'
            f'<div>true: <span class="true">{escape(error.get("true", ""))}</span></div>'
            f'<div>predicted: <span class="pred">{escape(error.get("pred", ""))}</span></div>'
            f'<span class="confidence">{percent(error.get("confidence"))} sure</span>'
            "</div></div>"
        )
    text = (
        f"The {len(errors)} in-class errors the model was most sure of. Confident errors are "
        "often label noise or classes that overlap; both are worth a look."
    )
    return f'{note(text)}<div class="gallery">{"".join(cards)}</div>'


def out_of_class_section(metrics: dict[str, Any]) -> str | None:
    if not metrics.get("n_out_of_class"):
        return None
    text = (
        f"{metrics['n_out_of_class']:,} labelled products belong to classes the model was not "
        "trained on; they are left out of every score above."
    )
    parts = [note(text)]
    labels: dict[str, int] = metrics.get("out_of_class_labels") or {}
    if labels:
        rows = [
            [escape(k), f"{int(v):,}"] for k, v in list(labels.items())[:MAX_OUT_OF_CLASS_LABELS]
        ]
        parts.append(table(["class (not in the model)", "products"], rows, {1}))
    examples = metrics.get("out_of_class_examples") or []
    if examples:
        rows = [
            [
                escape(x.get("id", "")),
                escape(x.get("title") or ""),
                escape(x.get("true", "")),
                escape(x.get("pred", "")),
                percent(x.get("confidence")),
            ]
            for x in examples
        ]
        headers = ["id", "title", "true class", "model said", "confidence"]
        parts.append(
            f"<details><summary>{len(rows)} examples</summary>{table(headers, rows, {4})}</details>"
        )
    return "".join(parts)
