"""A static HTML report of an evaluation: one self-contained file that opens offline.

Everything a reader needs is inside ``index.html``: inline CSS, the plots as base64 PNG data URIs
and the error gallery's photos as base64 JPEG thumbnails. There is no JavaScript and nothing is
fetched, so the file can be mailed, archived beside a model or opened on a machine without network.
Product titles and class names are user data: every piece of text goes through `html.escape`, and
matplotlib's mathtext is off so a "$" in a class name is drawn as a "$".

The report reads `prodcat.training.metrics.evaluate`'s dict; each section is one small function that
returns an HTML fragment, and a section whose input is absent is left out.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to memory, never open a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

import prodcat
from prodcat.catalogue.images import ImageError, load_image
from prodcat.taxonomy.probabilities import SEPARATOR, split_path

_DPI = 110
_THUMBNAIL_PX = 240  # gallery photos are shrunk to this (longer side) so the file stays small
_MAX_TRIALS_SHOWN = 30
_MAX_OUT_OF_CLASS_LABELS = 15
_BLUE, _ORANGE, _GREEN, _GREY = "#3366cc", "#e8903a", "#3a9a5b", "#b8c2d1"
_RC: dict[Any, Any] = {  # Any keys: matplotlib types them as a Literal of names
    "text.parse_math": False,  # class names and titles are data, not LaTeX
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: #1f2933; line-height: 1.45;
  font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
  "DejaVu Sans", sans-serif; font-size: 15px; }
.container { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.subtitle { color: #616e7c; margin: 0 0 12px; font-size: 13px; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 13px; margin-bottom: 8px; }
nav a { color: #3366cc; text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid #e1e5eb; border-radius: 10px;
  padding: 18px 22px; margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 12px; }
p.note { color: #616e7c; font-size: 13px; margin: 4px 0 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card { border: 1px solid #e1e5eb; border-radius: 8px; padding: 12px 14px; background: #fafbfd; }
.card .value { font-size: 26px; font-weight: 600; color: #1f3d7a; }
.card .label { font-size: 12px; color: #616e7c; text-transform: uppercase; letter-spacing: .04em; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #e1e5eb; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f0f3f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #eef6ee; }
details summary { cursor: pointer; color: #3366cc; font-size: 13px; margin: 6px 0; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px;
  max-height: 320px; overflow: auto; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: 14px; }
.error { border: 1px solid #e1e5eb; border-radius: 8px; overflow: hidden; background: #fafbfd;
  font-size: 12px; }
.error img.photo, .error .missing { display: block; width: 100%; height: 180px;
  object-fit: contain; background: #fff; border-bottom: 1px solid #e1e5eb; }
.error .missing { display: flex; align-items: center; justify-content: center; color: #9aa5b1;
  background: repeating-linear-gradient(45deg, #f4f6f9, #f4f6f9 8px, #eceff3 8px, #eceff3 16px); }
.error .body { padding: 8px 10px; }
.error .title { font-weight: 600; font-size: 13px; margin-bottom: 4px; }
.error .id { color: #9aa5b1; }
.true { color: #2f7a45; }
.pred { color: #b3261e; }
.confidence { display: inline-block; margin-top: 4px; padding: 1px 7px; border-radius: 10px;
  background: #fde8e6; color: #b3261e; font-weight: 600; }
footer { color: #9aa5b1; font-size: 12px; text-align: center; }
"""


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    metrics: dict[str, Any],
    model_info: dict[str, Any],
    experiments: list[dict[str, Any]] | None = None,
    model_selection: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Args:
        out_dir: created if missing; an existing ``index.html`` there is replaced.
        title: the page heading (escaped, so any text is safe).
        metrics: `prodcat.training.metrics.evaluate`'s dict for the test part.
        model_info: shown as a key/value table (head, encoders, training time...); nested
            values are shown as JSON.
        experiments: rows of the experiment comparison, each ``{"name": str, "accuracy": float}``
            plus any other columns (macro_f1, seconds...).
        model_selection: search trials, each ``{"family": str, "params": dict,
            "val_accuracy": float}`` (e.g. a head's ``validation_report_["trials"]``).
    """
    from prodcat.report.gate_sections import gate_sections  # here: it imports this module's helpers

    sections = [
        ("headline", "Headline", _headline_section(metrics)),
        *gate_sections(metrics),
        ("levels", "Accuracy per level", _levels_section(metrics)),
        ("experiments", "Experiment comparison", _experiments_section(experiments)),
        ("selection", "Model selection", _model_selection_section(model_selection)),
        *_confusion_section(metrics),
        ("per-class", "Per-class precision, recall and F1", _per_class_section(metrics)),
        ("errors", "Worst errors", _gallery_section(metrics)),
        ("out-of-class", "Out-of-class products", _out_of_class_section(metrics)),
        ("model", "Model", _model_info_section(model_info)),
    ]
    shown = [(key, heading, body) for key, heading, body in sections if body is not None]
    page = _page(title, shown)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# Page and formatting helpers


def _e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _page(title: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{key}">{_e(heading)}</a>' for key, heading, _ in sections)
    body = "\n".join(
        f'<section id="{key}">\n<h2>{_e(heading)}</h2>\n{content}\n</section>'
        for key, heading, content in sections
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<div class="container">
<header>
<h1>{_e(title)}</h1>
<p class="subtitle">prodcat {_e(prodcat.__version__)} evaluation report &middot; {stamp}</p>
<nav>{nav}</nav>
</header>
{body}
<footer>Generated by prodcat. Self-contained: no scripts, no network.</footer>
</div>
</body>
</html>
"""


def _percent(value: object, digits: int = 1) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return "&mdash;"
    return f"{100 * value:.{digits}f}%"


def _format_value(key: str, value: object) -> str:
    """A table cell: rates as percentages, durations in seconds, other numbers compactly."""
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return _e(value)
    if isinstance(value, float) and math.isnan(value):
        return "&mdash;"
    lowered = key.lower()
    is_rate = any(w in lowered for w in ("accuracy", "f1", "precision", "recall", "rate", "share"))
    if isinstance(value, float) and is_rate:
        return _percent(value)
    if isinstance(value, list | tuple) and value and is_rate and all(map(_is_number, value)):
        return " / ".join(_percent(v) for v in value)  # e.g. level_accuracy: level 1 / 2 / 3
    if isinstance(value, int | float) and ("second" in lowered or lowered.endswith("_s")):
        return f"{value:,.1f} s" if value >= 1 else f"{value:.3f} s"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return _e(", ".join(str(v) for v in value))  # e.g. the encoders: one line reads best
    if isinstance(value, dict | list | tuple):
        return f"<pre>{_e(json.dumps(value, indent=1, default=str))}</pre>"
    return _e(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    numeric: set[int],
    highlight: Sequence[bool] | None = None,
) -> str:
    """A table from already-escaped cells; `numeric` columns are right-aligned, and rows whose
    `highlight` is true are tinted (the best experiment)."""

    def cls(j: int) -> str:
        return ' class="num"' if j in numeric else ""

    head = ""
    if headers is not None:
        cells = "".join(f"<th{cls(j)}>{_e(h)}</th>" for j, h in enumerate(headers))
        head = f"<thead><tr>{cells}</tr></thead>"
    marks = highlight if highlight is not None else [False] * len(rows)
    body = "".join(
        ('<tr class="best">' if mark else "<tr>")
        + "".join(f"<td{cls(j)}>{cell}</td>" for j, cell in enumerate(row))
        + "</tr>"
        for row, mark in zip(rows, marks, strict=True)
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, Any]]:
    """A figure in the report's style; closed on exit even if drawing fails."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(width, height))
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _png(fig: Figure, alt: str) -> str:
    """The figure as an <img> with a base64 PNG data URI (call inside `_figure`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _short_names(classes: Sequence[str]) -> list[str]:
    """The shortest tail of each path that is unique among `classes` ("Sandal > Sandals")."""
    levels = [split_path(c) for c in classes]
    out = []
    for parts in levels:
        for k in range(1, len(parts) + 1):
            tail = parts[-k:]
            if sum(other[-k:] == tail for other in levels) == 1:
                break
        out.append(SEPARATOR.join(tail))
    return out


# --------------------------------------------------------------------------------------------------
# Sections: each returns an HTML fragment, or None to leave the section out


def _headline_section(metrics: dict[str, Any]) -> str:
    cards = [
        ("Accuracy", _percent(metrics.get("accuracy"))),
        ("Macro-F1", _percent(metrics.get("macro_f1"))),
        ("Top-3 accuracy", _percent(metrics.get("top3_accuracy"))),
        ("In class", f"{metrics.get('n_in_class', 0):,}"),
        ("Out of class", f"{metrics.get('n_out_of_class', 0):,}"),
    ]
    html_cards = "".join(
        f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'
        for label, value in cards
    )
    note = (
        "Scores are over the labelled products whose class is one of the model's "
        f"{metrics.get('n_classes', '?')} classes. Out-of-class products (a class the model was "
        "not trained on) are counted apart, never as errors"
    )
    if metrics.get("n_unlabelled"):
        n = metrics["n_unlabelled"]
        note += f"; {n:,} unlabelled product{'s were' if n != 1 else ' was'} skipped"
    return f'<div class="cards">{html_cards}</div>\n<p class="note">{_e(note)}.</p>'


def _levels_section(metrics: dict[str, Any]) -> str | None:
    levels = [float(a) for a in metrics.get("level_accuracy") or []]
    if not levels:
        return None
    names = [f"Level {k}" for k in range(1, len(levels) + 1)]
    with _figure(1.3 * len(levels) + 2.5, 2.6) as (fig, ax):
        bars = ax.bar(names, levels, color=_BLUE, width=0.55)
        ax.bar_label(bars, labels=[f"{100 * a:.1f}%" for a in levels], padding=2)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("accuracy")
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        image = _png(fig, "accuracy per level of the taxonomy")
    note = (
        "Level k counts a product right when the first k levels of the predicted path match its "
        "true path: level 1 is the department, the last level the full class."
    )
    return f'<p class="note">{_e(note)}</p>{image}'


def _experiments_section(experiments: list[dict[str, Any]] | None) -> str | None:
    if not experiments:
        return None
    columns = ["name"]
    for row in experiments:
        columns += [key for key in row if key not in columns]
    accuracies = [row.get("accuracy") for row in experiments]
    scored = [float(a) for a in accuracies if _is_number(a)]
    best = max(scored) if scored else None
    rows = [[_format_value(key, row.get(key)) for key in columns] for row in experiments]
    numeric = {
        j for j, key in enumerate(columns) if any(_is_number(r.get(key)) for r in experiments)
    }
    table = _table(columns, rows, numeric, [best is not None and a == best for a in accuracies])
    chart = _experiments_chart(experiments) if scored else ""
    return table + chart


def _experiments_chart(experiments: list[dict[str, Any]]) -> str:
    points = [
        (str(row.get("name", "?")), float(row["accuracy"]))
        for row in experiments
        if _is_number(row.get("accuracy"))
    ]
    points.sort(key=lambda p: p[1])  # barh draws bottom-up: the best ends on top
    names, values = [p[0] for p in points], [p[1] for p in points]
    best = max(values)
    colors = [_GREEN if v == best else _BLUE for v in values]
    with _figure(8, 0.42 * len(points) + 1.0) as (fig, ax):
        bars = ax.barh(names, values, color=colors, height=0.6)
        ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in values], padding=3)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("test accuracy")
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        return _png(fig, "test accuracy per experiment")


def _params_text(params: object) -> str:
    if isinstance(params, dict):
        return ", ".join(f"{k}={v}" for k, v in params.items())
    return "" if params is None else str(params)


def _model_selection_section(trials: list[dict[str, Any]] | None) -> str | None:
    if not trials:
        return None
    ordered = sorted(
        trials,
        key=lambda t: -float(t["val_accuracy"]) if _is_number(t.get("val_accuracy")) else 1.0,
    )
    with_seconds = any(_is_number(t.get("fit_seconds")) for t in trials)
    headers = ["family", "parameters", "validation accuracy"]
    headers += ["fit time"] if with_seconds else []
    rows = []
    for trial in ordered[:_MAX_TRIALS_SHOWN]:
        row = [
            _e(trial.get("family", "")),
            _e(_params_text(trial.get("params"))),
            _format_value("val_accuracy", trial.get("val_accuracy")),
        ]
        if with_seconds:
            row.append(_format_value("fit_seconds", trial.get("fit_seconds")))
        rows.append(row)
    note = f"{len(trials)} trials, best first"
    if len(trials) > _MAX_TRIALS_SHOWN:
        note += f"; the first {_MAX_TRIALS_SHOWN} are shown"
    table = _table(headers, rows, {2, 3})
    return f'{_model_selection_chart(trials)}<p class="note">{_e(note)}.</p>{table}'


def _model_selection_chart(trials: list[dict[str, Any]]) -> str:
    best: dict[str, float] = {}
    for trial in trials:
        if _is_number(trial.get("val_accuracy")):
            family = str(trial.get("family", "?"))
            best[family] = max(best.get(family, -1.0), float(trial["val_accuracy"]))
    if not best:
        return ""
    families = sorted(best, key=lambda f: best[f])
    values = [best[f] for f in families]
    top = max(values)
    with _figure(7, 0.45 * len(families) + 1.0) as (fig, ax):
        colors = [_GREEN if v == top else _BLUE for v in values]
        bars = ax.barh(families, values, color=colors, height=0.6)
        ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in values], padding=3)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("best validation accuracy")
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        return _png(fig, "best validation accuracy per model family")


def _confusion_section(metrics: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The heatmap when the model is small enough for one, else the top confusions table."""
    confusion = metrics.get("confusion")
    if confusion is not None and confusion.get("labels"):
        return [("confusion", "Confusion matrix", _confusion_heatmap(confusion))]
    return [("confusions", "Top confusions", _top_confusions_table(metrics))]


def _confusion_heatmap(confusion: dict[str, Any]) -> str:
    labels = [str(c) for c in confusion["labels"]]
    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(labels)
    with _figure(0.42 * n + 4.0, 0.36 * n + 2.0) as (fig, ax):
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(n), _short_names(labels), rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.spines[:].set_visible(False)
        font = max(6.0, min(9.0, 150 / max(n, 1)))
        for i, j in zip(*np.nonzero(counts), strict=True):
            color = "white" if share[i, j] > 0.55 else "#1f2933"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font, color=color)
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="share of the true class")
        html_image = _png(fig, "confusion matrix")
    note = (
        "Rows are true classes, columns predicted ones; the numbers are product counts and the "
        "colour is the share of the row, so the diagonal is each class's recall."
    )
    return f'<p class="note">{_e(note)}</p>{html_image}'


def _top_confusions_table(metrics: dict[str, Any]) -> str:
    confusions = metrics.get("top_confusions") or []
    if not confusions:
        return '<p class="note">No in-class errors.</p>'
    rows = [[_e(c["true"]), _e(c["pred"]), f"{int(c['count']):,}"] for c in confusions]
    note = "The most frequent mix-ups (true class taken for predicted class), largest first."
    return f'<p class="note">{_e(note)}</p>' + _table(
        ["true class", "predicted class", "products"], rows, {2}
    )


def _per_class_section(metrics: dict[str, Any]) -> str | None:
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if not per_class:
        return None
    # Weakest first: the classes that need attention are at the top of the chart and table.
    ordered = sorted(per_class.items(), key=lambda kv: (kv[1]["f1"], -kv[1]["support"], kv[0]))
    rows = [
        [
            _e(name),
            _percent(s["precision"]),
            _percent(s["recall"]),
            _percent(s["f1"]),
            f"{int(s['support']):,}",
        ]
        for name, s in ordered
    ]
    table = _table(["class", "precision", "recall", "F1", "support"], rows, {1, 2, 3, 4})
    note = "Classes sorted by F1, weakest first; support is the number of test products."
    return (
        f'<p class="note">{_e(note)}</p>{_per_class_chart(ordered)}'
        f"<details><summary>Table of {len(rows)} classes</summary>{table}</details>"
    )


def _per_class_chart(ordered: list[tuple[str, dict[str, Any]]]) -> str:
    n = len(ordered)
    names = [f"{name} ({int(s['support'])})" for name, s in ordered]
    y = np.arange(n)[::-1]  # the first (weakest) class on top
    height = 0.26
    with _figure(9.5, 0.36 * n + 1.2) as (fig, ax):
        for offset, key, color in (
            (height, "precision", _GREY),
            (0.0, "recall", _ORANGE),
            (-height, "f1", _BLUE),
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
        return _png(fig, "precision, recall and F1 per class")


def _photo(path: object) -> str:
    """The product photo as an embedded JPEG thumbnail, or a placeholder; never raises."""
    if not path:
        return '<div class="missing">no photo</div>'
    try:
        image = load_image(Path(str(path)), draft_size=_THUMBNAIL_PX)
        image.thumbnail((_THUMBNAIL_PX, _THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    except (ImageError, OSError, ValueError):
        return '<div class="missing">photo not found</div>'
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="photo" alt="product photo" src="data:image/jpeg;base64,{data}">'


def _gallery_section(metrics: dict[str, Any]) -> str:
    errors = metrics.get("worst_errors") or []
    if not errors:
        return '<p class="note">No in-class errors.</p>'
    cards = []
    for error in errors:
        title = error.get("title") or "(no title)"
        cards.append(
            '<div class="error">'
            f"{_photo(error.get('image'))}"
            '<div class="body">'
            f'<div class="title">{_e(title)}</div>'
            f'<div class="id">id {_e(error.get("id", ""))}</div>'
            f'<div>true: <span class="true">{_e(error.get("true", ""))}</span></div>'
            f'<div>predicted: <span class="pred">{_e(error.get("pred", ""))}</span></div>'
            f'<span class="confidence">{_percent(error.get("confidence"))} sure</span>'
            "</div></div>"
        )
    note = (
        f"The {len(errors)} in-class errors the model was most sure of. Confident errors are "
        "often label noise or classes that overlap; both are worth a look."
    )
    return f'<p class="note">{_e(note)}</p><div class="gallery">{"".join(cards)}</div>'


def _out_of_class_section(metrics: dict[str, Any]) -> str | None:
    if not metrics.get("n_out_of_class"):
        return None
    note = (
        f"{metrics['n_out_of_class']:,} labelled products belong to classes the model was not "
        "trained on; they are left out of every score above."
    )
    parts = [f'<p class="note">{_e(note)}</p>']
    labels: dict[str, int] = metrics.get("out_of_class_labels") or {}
    if labels:
        rows = [[_e(k), f"{int(v):,}"] for k, v in list(labels.items())[:_MAX_OUT_OF_CLASS_LABELS]]
        parts.append(_table(["class (not in the model)", "products"], rows, {1}))
    examples = metrics.get("out_of_class_examples") or []
    if examples:
        rows = [
            [
                _e(x.get("id", "")),
                _e(x.get("title") or ""),
                _e(x.get("true", "")),
                _e(x.get("pred", "")),
                _percent(x.get("confidence")),
            ]
            for x in examples
        ]
        headers = ["id", "title", "true class", "model said", "confidence"]
        parts.append(
            f"<details><summary>{len(rows)} examples</summary>"
            f"{_table(headers, rows, {4})}</details>"
        )
    return "".join(parts)


def _model_info_section(model_info: dict[str, Any]) -> str | None:
    if not model_info:
        return None
    rows = [[_e(key), _format_value(str(key), value)] for key, value in model_info.items()]
    return _table(None, rows, set())
