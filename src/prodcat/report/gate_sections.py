"""The report's gate sections: decisions, reliability diagram, accuracy vs coverage, OOD.

Each function reads `prodcat.gate.gate.gate_metrics`'s keys from the evaluation dict and returns an
HTML fragment, or None when the evaluation has no gate figures (a model trained before the gate).
"""

from __future__ import annotations

from typing import Any

from prodcat.report.elements import BLUE, GREY, ORANGE, escape, figure, note, percent, png, table

# Below this many out-of-class products an out-of-distribution figure is noise (with 2 products an
# AUROC moves in steps of a half): the report says so instead of showing the figure as a result.
MIN_OUT_OF_CLASS = 30

OOD_NAMES = {
    "ood_score": "prodcat OOD score (combined)",
    "prototype_rule": "the prototype's rule (all-zero bag of words)",
    "max_softmax": "max softmax (1 - top probability)",
    "signal:image_distance": "photo: distance to the 5th nearest training photo alone",
    "signal:text_distance": "title: distance to the nearest training title alone",
    "signal:unseen_words": "share of unseen title words alone",
    "signal:max_softmax": "max softmax alone (inside the combined score)",
}


def gate_sections(metrics: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [
        ("gate", "Decisions: accept, review, unknown", _decisions_section(metrics)),
        ("calibration", "Calibration (reliability diagram)", _calibration_section(metrics)),
        ("coverage", "Accuracy vs coverage", _coverage_section(metrics)),
        ("ood", "Out-of-distribution detection", _ood_section(metrics)),
    ]


def _decisions_section(metrics: dict[str, Any]) -> str | None:
    if "coverage" not in metrics:
        return None
    counts = metrics.get("decisions", {})
    rows = [
        ["coverage (share of in-class products accepted)", percent(metrics["coverage"], 2)],
        ["accuracy of accepted products", percent(metrics.get("accepted_accuracy"), 2)],
        ["target accuracy", percent(metrics.get("target_accuracy"), 2)],
        *_guarantee_rows(metrics),
        ["true class in the top 3 of products sent to review", percent(metrics["review_top3"])],
        ["in-class products flagged unknown", percent(metrics.get("unknown_share"), 2)],
        *[[f"decision {d}", f"{n:,}"] for d, n in counts.items()],
    ]
    thresholds = metrics.get("accept_thresholds")
    if isinstance(thresholds, dict):
        rows += [[f"accept threshold ({c})", f"{t:.4f}"] for c, t in thresholds.items()]
    elif thresholds is not None:
        rows.append(["accept threshold (given)", f"{float(thresholds):.4f}"])
    text = (
        "accept: labelled automatically; review: a person checks it with the top-5 suggestions; "
        "unknown: it looks like no class the model knows. Each threshold is certified on the "
        "calibration products: the accepted accuracy is at least the target with 95% confidence "
        "(Learn-then-Test with exact binomial bounds, docs/gate.md)."
    )
    return note(text) + table(None, rows, {1}) + _blocked_html(metrics)


def _guarantee_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """The certificate beside the point estimate: guaranteed accuracy, products, delta."""
    guarantee = metrics.get("guarantee") or {}
    if not guarantee:
        return [["guaranteed accuracy", "- (a model trained before certified thresholds)"]]
    confidence = 1 - float(guarantee.get("delta", 0.05))
    return [
        [
            f"guaranteed accepted accuracy ({confidence:.0%} lower bound)",
            percent(guarantee.get("guaranteed_accuracy"), 2),
        ],
        [
            "calibration products it rests on",
            f"{guarantee.get('n_calibration', 0):,} ({escape(str(guarantee.get('calibration')))})",
        ],
        [
            "accuracy of accepted calibration products",
            percent(guarantee.get("accepted_accuracy"), 2),
        ],
        ["delta (chance the promise fails)", f"{guarantee.get('delta')}"],
    ]


CASE_NAMES = {"image+text": "photo + title", "image": "photo only", "text": "title only"}


def _blocked_html(metrics: dict[str, Any]) -> str:
    """The classes with their own (higher) threshold or never accepted, per modality case."""
    rows = [
        [
            escape(CASE_NAMES.get(case, case)),
            escape(name),
            "never accepted" if t > 1.0 else f"{t:.4f}",
        ]
        for case, limits in (metrics.get("class_thresholds") or {}).items()
        for name, t in limits.items()
    ]
    if not rows:
        return note(
            "Every class is accepted at its case's threshold: none has evidence against it."
        )
    text = (
        "Classes whose own accepted calibration products cannot support the target at the common "
        "threshold (none accepted, or more errors than the target allows): each has its own "
        "threshold, certified on its products alone, or is never accepted (always reviewed)."
    )
    return note(text) + table(["case", "class", "own threshold"], rows, {2})


def _calibration_section(metrics: dict[str, Any]) -> str | None:
    summary = metrics.get("reliability")
    if not summary:
        return None
    with figure(5.2, 4.2) as (fig, ax):
        ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", label="perfect")
        for key, color in (("uncalibrated", ORANGE), ("calibrated", BLUE)):
            bins = summary[key]["reliability"]
            ece = summary[key]["ece"]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                color=color,
                label=f"{key} (ECE {ece:.4f})" if ece is not None else key,
            )
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title("Reliability diagram")
        ax.legend(loc="upper left", fontsize=8)
        image = png(fig, "reliability diagram before and after temperature scaling")
    text = (
        "Temperature scaling, one temperature per modality case, fitted on validation. A "
        "calibrated model's points lie on the diagonal: of the products it is 90% sure of, 90% "
        "are right."
    )
    return note(text) + image


def _coverage_section(metrics: dict[str, Any]) -> str | None:
    curve = metrics.get("coverage_curve")
    if not curve:
        return None
    with figure(5.6, 3.6) as (fig, ax):
        ax.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], color=BLUE)
        if metrics.get("coverage") is not None and metrics.get("accepted_accuracy") is not None:
            ax.scatter(
                [metrics["coverage"]],
                [metrics["accepted_accuracy"]],
                color=ORANGE,
                zorder=3,
                label="the model's accept threshold",
            )
            ax.legend(loc="lower left", fontsize=8)
        if metrics.get("target_accuracy"):
            ax.axhline(metrics["target_accuracy"], color=GREY, linestyle="--")
        ax.set_xlabel("coverage (share of products accepted)")
        ax.set_ylabel("accuracy of accepted products")
        ax.set_title("Accuracy vs coverage")
        image = png(fig, "accuracy of accepted products against coverage")
    return image


def too_few_products(n: int) -> str:
    """The caveat shown instead of an out-of-distribution figure over `n` < MIN_OUT_OF_CLASS."""
    return f"rests on {n:,} out-of-class product{'s' if n != 1 else ''}: too few to mean anything"


def _ood_section(metrics: dict[str, Any]) -> str | None:
    comparison = metrics.get("ood_comparison")
    if not comparison:
        return None
    n_out = int(metrics.get("n_out_of_class", 0))
    rows = [
        [
            escape(OOD_NAMES.get(name, name)),
            "-" if v["auroc"] is None else f"{v['auroc']:.3f}",
            percent(v["flagged_at_95"]),
        ]
        for name, v in comparison.items()
    ]
    text = (
        f"{n_out:,} out-of-class products against {metrics.get('n_in_class', 0):,} in-class ones. "
        "AUROC: the chance that an out-of-class product scores higher than an in-class one; "
        "flagged at 95%: the share of out-of-class products flagged when the threshold lets 95% "
        "of in-class products pass."
    )
    html_table = table(["score", "AUROC", "flagged at 95% pass"], rows, {1, 2})
    if n_out < MIN_OUT_OF_CLASS:
        # No chart, and the figures folded away: a reader must not take them for a result.
        warning = (
            f"This comparison {too_few_products(n_out)} (one product moves the share flagged "
            f"by {100 / max(n_out, 1):.0f} points). Judge the scores on at least "
            f"{MIN_OUT_OF_CLASS} products of classes the model was not trained on."
        )
        return (
            f'<p class="warning">{escape(warning)}</p>{note(text)}'
            f"<details><summary>The figures over {n_out:,} products (not meaningful)</summary>"
            f"{html_table}</details>"
        )
    return note(text) + html_table + _ood_chart(comparison)


def _ood_chart(comparison: dict[str, Any]) -> str:
    names = [n for n in comparison if comparison[n]["auroc"] is not None]
    with figure(5.6, 0.45 * len(names) + 1.0) as (fig, ax):
        ax.barh(
            [OOD_NAMES.get(n, n) for n in names],
            [comparison[n]["flagged_at_95"] or 0 for n in names],
            color=[BLUE if n == "ood_score" else GREY for n in names],
        )
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("share of out-of-class products flagged at 95% in-class pass")
        return png(fig, "out-of-class products flagged by each score")
