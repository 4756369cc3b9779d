"""The report's building blocks: escaping, number formatting, tables, figures as PNG, colours.

Every section (`prodcat.report.sections`, `prodcat.report.gate_sections`) builds its HTML from
these, so text is escaped and numbers are rounded the same way everywhere. Product titles and
class names are user data: every piece of text goes through `escape`, and matplotlib's mathtext is
off so a "$" in a class name is drawn as a "$".
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeGuard

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to memory, never open a window

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from prodcat.taxonomy.probabilities import SEPARATOR, split_path

DPI = 110
BLUE, ORANGE, GREEN, GREY = "#3366cc", "#e8903a", "#3a9a5b", "#b8c2d1"
DASH = "&mdash;"  # a figure that could not be measured
# A figure whose name has one of these words is a share, shown as a percentage.
RATE_WORDS = frozenset(
    {"accuracy", "f1", "precision", "recall", "rate", "share", "coverage", "flagged", "top3"}
)
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


# --------------------------------------------------------------------------------------------------
# Text and numbers


def escape(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def note(text: str) -> str:
    """A grey explanatory paragraph (escaped)."""
    return f'<p class="note">{escape(text)}</p>'


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def percent(value: object, digits: int = 1) -> str:
    """0.9615 -> "96.2%"; a dash for anything that is no number."""
    if not is_number(value) or math.isnan(value):
        return DASH
    return f"{100 * value:.{digits}f}%"


def compact_number(value: float) -> str:
    """A float rounded to 4 significant digits, without an exponent for everyday magnitudes."""
    if value == 0 or 1e-4 <= abs(value) < 1e7:
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:.3g}"


def is_rate(key: str) -> bool:
    """Whether a figure named `key` is a share (shown as a percentage): one of its words is a
    rate word ("val_accuracy", "review top3"; not "ece_uncalibrated")."""
    return any(word in RATE_WORDS for word in re.split(r"[^a-z0-9]+", key.lower()))


def format_value(key: str, value: object) -> str:
    """A table cell (escaped HTML): rates as percentages, durations in seconds, other numbers
    rounded, lists on one line, and nested dicts as small tables of their own."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return escape(value)
    lowered = key.lower()
    if isinstance(value, float) and is_rate(key):
        return percent(value)
    if isinstance(value, list | tuple) and value and is_rate(key) and all(map(is_number, value)):
        return " / ".join(percent(v) for v in value)  # e.g. level_accuracy: level 1 / 2 / 3
    if is_number(value) and ("second" in lowered or lowered.endswith("_s")):
        return f"{value:,.1f} s" if value >= 1 else f"{value:.3f} s"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return escape(compact_number(value))
    if isinstance(value, Mapping):
        return key_value_table(value, nested=True)
    if isinstance(value, list | tuple):
        return escape(", ".join(_plain(v) for v in value))  # e.g. the encoders: one line
    return escape(value)


def _plain(value: object) -> str:
    return compact_number(value) if isinstance(value, float) else str(value)


def params_text(params: object) -> str:
    """A trial's hyper-parameters on one line, floats rounded: "C=4.657, max_depth=25"."""
    if isinstance(params, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in params.items())
    return "" if params is None else str(params)


def short_names(classes: Sequence[str]) -> list[str]:
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
# Tables


def table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    numeric: set[int],
    highlight: Sequence[bool] | None = None,
    *,
    css_class: str | None = None,
) -> str:
    """A table from already-escaped cells; `numeric` columns are right-aligned, and rows whose
    `highlight` is true are tinted (the best experiment)."""

    def cls(j: int) -> str:
        return ' class="num"' if j in numeric else ""

    head = ""
    if headers is not None:
        cells = "".join(f"<th{cls(j)}>{escape(h)}</th>" for j, h in enumerate(headers))
        head = f"<thead><tr>{cells}</tr></thead>"
    marks = highlight if highlight is not None else [False] * len(rows)
    body = "".join(
        ('<tr class="best">' if mark else "<tr>")
        + "".join(f"<td{cls(j)}>{cell}</td>" for j, cell in enumerate(row))
        + "</tr>"
        for row, mark in zip(rows, marks, strict=True)
    )
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}>{head}<tbody>{body}</tbody></table>"


def key_value_table(values: Mapping[Any, Any], *, nested: bool = False) -> str:
    """Two columns, the name and its formatted value; a nested one is drawn smaller."""
    rows = [[escape(key), format_value(str(key), value)] for key, value in values.items()]
    return table(None, rows, set(), css_class="nested" if nested else "key-value")


# --------------------------------------------------------------------------------------------------
# Figures


@contextmanager
def figure(width: float, height: float) -> Iterator[tuple[Figure, Any]]:
    """A figure in the report's style; closed on exit even if drawing fails."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(width, height))
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def png(fig: Figure, alt: str) -> str:
    """The figure as an <img> with a base64 PNG data URI (call inside `figure`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">'
