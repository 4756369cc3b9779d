"""The report's sections on the scores: headline, levels, experiments, model selection, model.

Each function reads `prodcat.training.metrics.evaluate`'s dict (or write_report's other inputs)
and returns an HTML fragment, or None to leave its section out. The per-class sections (confusion,
per-class scores, errors, out-of-class products) are in `prodcat.report.class_sections`, the gate's
in `prodcat.report.gate_sections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prodcat.report.elements import (
    BLUE,
    GREEN,
    escape,
    figure,
    format_value,
    is_number,
    key_value_table,
    note,
    params_text,
    percent,
    png,
    table,
)
from prodcat.report.gate_sections import MIN_OUT_OF_CLASS, too_few_products

MAX_TRIALS_SHOWN = 30
# What the model-selection families are (`prodcat.heads.text_linear.FAMILIES`); others are shown
# by their own name.
FAMILY_NAMES = {
    "l1": "L1-regularised logistic regression",
    "l2": "L2-regularised logistic regression",
    "rf": "random forest",
}


def headline_section(metrics: dict[str, Any]) -> str:
    cards = [
        ("Accuracy", percent(metrics.get("accuracy"))),
        ("Macro-F1", percent(metrics.get("macro_f1"))),
        ("Top-3 accuracy", percent(metrics.get("top3_accuracy"))),
        ("In class", f"{metrics.get('n_in_class', 0):,}"),
        ("Out of class", f"{metrics.get('n_out_of_class', 0):,}"),
    ]
    html_cards = "".join(
        f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'
        for label, value in cards
    )
    text = (
        "Scores are over the labelled products whose class is one of the model's "
        f"{metrics.get('n_classes', '?')} classes. Out-of-class products (a class the model was "
        "not trained on) are counted apart, never as errors"
    )
    if metrics.get("n_unlabelled"):
        n = metrics["n_unlabelled"]
        text += f"; {n:,} unlabelled product{'s were' if n != 1 else ' was'} skipped"
    return f'<div class="cards">{html_cards}</div>\n{note(text + ".")}'


def levels_section(metrics: dict[str, Any]) -> str | None:
    levels = [float(a) for a in metrics.get("level_accuracy") or []]
    if not levels:
        return None
    names = [f"Level {k}" for k in range(1, len(levels) + 1)]
    with figure(1.3 * len(levels) + 2.5, 2.6) as (fig, ax):
        bars = ax.bar(names, levels, color=BLUE, width=0.55)
        ax.bar_label(bars, labels=[f"{100 * a:.1f}%" for a in levels], padding=2)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("accuracy")
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        image = png(fig, "accuracy per level of the taxonomy")
    text = (
        "Level k counts a product right when the first k levels of the predicted path match its "
        "true path: level 1 is the department, the last level the full class."
    )
    return note(text) + image


def experiments_section(experiments: list[dict[str, Any]] | None) -> str | None:
    if not experiments:
        return None
    columns = ["name"]
    for row in experiments:
        columns += [key for key in row if key not in columns]
    accuracies = [row.get("accuracy") for row in experiments]
    scored = [float(a) for a in accuracies if is_number(a)]
    best = max(scored) if scored else None
    rows = [[format_value(key, row.get(key)) for key in columns] for row in experiments]
    numeric = {
        j for j, key in enumerate(columns) if any(is_number(r.get(key)) for r in experiments)
    }
    html_table = table(columns, rows, numeric, [best is not None and a == best for a in accuracies])
    chart = _experiments_chart(experiments) if scored else ""
    return html_table + chart


def _experiments_chart(experiments: list[dict[str, Any]]) -> str:
    points = [
        (str(row.get("name", "?")), float(row["accuracy"]))
        for row in experiments
        if is_number(row.get("accuracy"))
    ]
    points.sort(key=lambda p: p[1])  # barh draws bottom-up: the best ends on top
    names, values = [p[0] for p in points], [p[1] for p in points]
    best = max(values)
    colors = [GREEN if v == best else BLUE for v in values]
    with figure(8, 0.42 * len(points) + 1.0) as (fig, ax):
        bars = ax.barh(names, values, color=colors, height=0.6)
        ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in values], padding=3)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("test accuracy")
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        return png(fig, "test accuracy per experiment")


def family_label(family: str) -> str:
    """ "l1" -> "L1-regularised logistic regression (l1)"; an unknown family stays as it is."""
    name = FAMILY_NAMES.get(family)
    return f"{name} ({family})" if name else family


def model_selection_section(trials: list[dict[str, Any]] | None) -> str | None:
    if not trials:
        return None
    ordered = sorted(
        trials,
        key=lambda t: -float(t["val_accuracy"]) if is_number(t.get("val_accuracy")) else 1.0,
    )
    with_seconds = any(is_number(t.get("fit_seconds")) for t in trials)
    headers = ["family", "parameters", "validation accuracy"]
    headers += ["fit time"] if with_seconds else []
    rows = []
    for trial in ordered[:MAX_TRIALS_SHOWN]:
        row = [
            escape(trial.get("family", "")),
            escape(params_text(trial.get("params"))),
            format_value("val_accuracy", trial.get("val_accuracy")),
        ]
        if with_seconds:
            row.append(format_value("fit_seconds", trial.get("fit_seconds")))
        rows.append(row)
    families = list(dict.fromkeys(str(t.get("family", "?")) for t in trials))
    known = [f"{f}: {FAMILY_NAMES[f]}" for f in families if f in FAMILY_NAMES]
    text = f"{len(trials)} trials, best first"
    if len(trials) > MAX_TRIALS_SHOWN:
        text += f"; the first {MAX_TRIALS_SHOWN} are shown"
    text += f" ({'; '.join(known)})." if known else "."
    chart = _model_selection_chart(trials)
    return f"{chart}{note(text)}{table(headers, rows, {2, 3})}"


def _model_selection_chart(trials: list[dict[str, Any]]) -> str:
    best: dict[str, float] = {}
    for trial in trials:
        if is_number(trial.get("val_accuracy")):
            family = str(trial.get("family", "?"))
            best[family] = max(best.get(family, -1.0), float(trial["val_accuracy"]))
    if not best:
        return ""
    families = sorted(best, key=lambda f: best[f])
    values = [best[f] for f in families]
    top = max(values)
    with figure(7, 0.45 * len(families) + 1.0) as (fig, ax):
        colors = [GREEN if v == top else BLUE for v in values]
        bars = ax.barh([family_label(f) for f in families], values, color=colors, height=0.6)
        ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in values], padding=3)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("best validation accuracy")
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        return png(fig, "best validation accuracy per model family")


def model_info_section(model_info: dict[str, Any]) -> str | None:
    """The model's description as a table; nested figures (validation, test...) as small tables
    of their own, with out-of-distribution figures over too few products marked as such."""
    if not model_info:
        return None
    return key_value_table({key: _with_ood_caveat(value) for key, value in model_info.items()})


def _with_ood_caveat(value: object) -> object:
    """A metrics dict whose OOD figures rest on too few out-of-class products says so instead."""
    if not isinstance(value, Mapping):
        return value
    n = value.get("n_out_of_class")
    if not is_number(n) or n >= MIN_OUT_OF_CLASS:
        return dict(value)
    return {
        key: too_few_products(int(n)) if str(key).startswith("ood_") and v is not None else v
        for key, v in value.items()
    }
