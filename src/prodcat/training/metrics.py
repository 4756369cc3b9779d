"""Score a model's probabilities against the true categories, in a form a report can show.

The figures are computed on *in-class* products only: those whose true class is one of the
model's classes. A labelled product of a class the model never saw (a class too small to train, a
new category) cannot be classified correctly by construction, so counting it as an error would
blame the model for the split; it is counted apart (`n_out_of_class`) and shown with what the model
said instead. Unlabelled products (``None``) are skipped entirely.

Everything returned is plain Python (str, int, float, None, list, dict), so it can be written with
`json.dump` and read back by `prodcat.report.html.write_report`.

The scores are computed with NumPy (scikit-learn's definitions: tests/test_evaluate.py compares
them), because `prodcat evaluate` runs in the base install, which has no scikit-learn.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prodcat.gate.gate import class_indices, gate_metrics
from prodcat.taxonomy.probabilities import level_accuracy
from prodcat.taxonomy.tree import format_path

if TYPE_CHECKING:
    from prodcat.catalogue import Product
    from prodcat.heads import Inputs
    from prodcat.model.bundle import Model

# A confusion matrix over more classes than this is unreadable as a heatmap (and large as JSON);
# the report shows the largest off-diagonal cells (`top_confusions`) instead.
MAX_CONFUSION_CLASSES = 25
N_TOP_CONFUSIONS = 20
N_OUT_OF_CLASS_EXAMPLES = 10
TOP_K = 3


def evaluate(
    true: Sequence[str | None],
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    images: Sequence[str | Path | None] | None = None,
    n_worst: int = 24,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-level and top-3 accuracy, per-class scores and the worst errors.

    Args:
        true: the true class path per product ("Footwear > Shoes > Sports Shoes"); ``None`` (or
            "" / NaN, as a missing table cell reads) marks an unlabelled product, which is skipped.
        proba: ``(n_products, n_classes)`` probabilities; column j belongs to ``classes[j]``.
        classes: the model's classes, in the column order of `proba`.
        ids, titles, images: per product, to name the products in `worst_errors` and
            `out_of_class_examples` (the image paths feed the report's error gallery). Without
            `ids` a product is named by its row number.
        n_worst: how many in-class errors to keep in `worst_errors`.

    Returns:
        A JSON-serialisable dict. The predicted class is the argmax of `proba` (the first column
        of equals). ``n_products`` counts every row given, ``n_unlabelled`` the skipped ones, and
        ``n_in_class + n_out_of_class`` the labelled ones. With no in-class product the scores
        are ``None`` (there is nothing to score) and the lists are empty.

    Raises:
        ValueError: `proba`'s shape does not match ``(len(true), len(classes))``, it holds
            non-finite values, `classes` has duplicates, or a per-product list has another length.
    """
    class_list, array = _check_inputs(true, proba, classes)
    n = array.shape[0]
    ids_ = _per_product(ids, n, "ids")
    titles_ = _per_product(titles, n, "titles")
    images_ = _per_product(images, n, "images")
    if isinstance(n_worst, bool) or not isinstance(n_worst, int) or n_worst < 0:
        raise ValueError(f"n_worst={n_worst!r}; expected an integer >= 0")

    labels = [_label(t) for t in true]
    class_index = {c: j for j, c in enumerate(class_list)}
    in_rows = [i for i, t in enumerate(labels) if t is not None and t in class_index]
    out_rows = [i for i, t in enumerate(labels) if t is not None and t not in class_index]
    pred_index = np.argmax(array, axis=1) if n else np.zeros(0, dtype=np.int64)
    pred = [class_list[j] for j in pred_index]

    def name(i: int) -> str:
        return str(ids_[i]) if ids_ is not None else str(i)

    def text(values: list[Any] | None, i: int) -> str | None:
        return None if values is None or values[i] is None else str(values[i])

    y_true = [str(labels[i]) for i in in_rows]
    y_pred = [pred[i] for i in in_rows]
    metrics: dict[str, Any] = {
        "n_products": n,
        "n_unlabelled": sum(t is None for t in labels),
        "n_in_class": len(in_rows),
        "n_out_of_class": len(out_rows),
        "n_classes": len(class_list),
        **_scores(y_true, y_pred, array[in_rows], [class_index[t] for t in y_true], class_list),
        "confusion": _confusion(y_true, y_pred, class_list),
        "top_confusions": _top_confusions(y_true, y_pred),
    }

    errors = [i for i in in_rows if pred[i] != labels[i]]
    # Most confident first; the row number breaks ties so the order is deterministic.
    errors.sort(key=lambda i: (-float(array[i, pred_index[i]]), i))
    metrics["worst_errors"] = [
        {
            "id": name(i),
            "title": text(titles_, i),
            "image": text(images_, i),
            "true": labels[i],
            "pred": pred[i],
            "confidence": float(array[i, pred_index[i]]),
            "true_probability": float(array[i, class_index[str(labels[i])]]),
        }
        for i in errors[:n_worst]
    ]
    metrics["out_of_class_labels"] = dict(
        sorted(Counter(str(labels[i]) for i in out_rows).items(), key=lambda kv: (-kv[1], kv[0]))
    )
    metrics["out_of_class_examples"] = [
        {
            "id": name(i),
            "title": text(titles_, i),
            "true": labels[i],
            "pred": pred[i],
            "confidence": float(array[i, pred_index[i]]),
        }
        for i in out_rows[:N_OUT_OF_CLASS_EXAMPLES]
    ]
    return metrics


def _check_inputs(
    true: Sequence[str | None], proba: np.ndarray, classes: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Fail early with a message naming both shapes: a mismatch here is a wiring bug upstream."""
    if isinstance(true, str) or isinstance(classes, str):
        raise TypeError("true and classes must be sequences of class paths, not single strings")
    class_list = [str(c) for c in classes]
    if not class_list:
        raise ValueError("classes is empty; expected the class paths of the model's columns")
    duplicates = sorted(c for c, k in Counter(class_list).items() if k > 1)
    if duplicates:
        raise ValueError(f"classes has duplicates {duplicates}; expected one column per class")
    array = np.asarray(proba, dtype=np.float64)
    expected = (
        f"({len(true)}, {len(class_list)}): one row per product in true, one column per class"
    )
    if array.ndim != 2 or array.shape != (len(true), len(class_list)):
        raise ValueError(f"proba has shape {array.shape}; expected {expected}")
    if not np.all(np.isfinite(array)):
        raise ValueError("proba holds NaN or infinite values; expected probabilities")
    return class_list, array


def _per_product(values: Sequence[Any] | None, n: int, what: str) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError(f"{what} must be a sequence with one entry per product, not a string")
    out = list(values)
    if len(out) != n:
        raise ValueError(f"{what} has {len(out)} entries; expected {n}, one per product")
    return out


def _label(value: object) -> str | None:
    """A true label, or None for an unlabelled product (None, "", or NaN from a missing cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _scores(
    y_true: list[str],
    y_pred: list[str],
    proba: np.ndarray,
    true_index: list[int],
    classes: list[str],
) -> dict[str, Any]:
    """The headline and per-class figures over the in-class products (None when there are none)."""
    if not y_true:
        return {
            "accuracy": None,
            "macro_f1": None,
            "top3_accuracy": None,
            "level_accuracy": [],
            "per_class": {},
        }
    present, predicted = set(y_true), set(y_pred)
    # Macro-F1 averages over the classes that occur in the truth: a model class absent from the
    # test part has no recall to measure, and averaging its 0 in would depend on the split.
    shown = [c for c in classes if c in present or c in predicted]
    precision, recall, f1, support = _per_class_scores(_confusion_counts(y_true, y_pred, shown))
    truth_f1 = f1[[k for k, c in enumerate(shown) if c in present]]
    # A stable sort puts the argmax column first among equals, so top-1 here is the prediction.
    top_k = np.argsort(-proba, axis=1, kind="stable")[:, :TOP_K]
    return {
        "accuracy": float(np.mean([t == p for t, p in zip(y_true, y_pred, strict=True)])),
        "macro_f1": float(np.mean(truth_f1)),
        "top3_accuracy": float(np.mean(np.any(top_k == np.array(true_index)[:, None], axis=1))),
        "level_accuracy": [float(a) for a in level_accuracy(y_true, y_pred)],
        "per_class": {
            c: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, c in enumerate(shown)
        },
    }


def _confusion(y_true: list[str], y_pred: list[str], classes: list[str]) -> dict[str, Any] | None:
    """Counts, rows = true class, columns = predicted, over every model class (small models)."""
    if len(classes) > MAX_CONFUSION_CLASSES:
        return None
    if not y_true:
        matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    else:
        matrix = _confusion_counts(y_true, y_pred, classes)
    return {"labels": list(classes), "matrix": matrix.astype(int).tolist()}


def _confusion_counts(y_true: list[str], y_pred: list[str], labels: list[str]) -> np.ndarray:
    """(len(labels),) * 2 int64 counts, rows = true, columns = predicted; pairs with a class
    outside `labels` are not counted (scikit-learn's `confusion_matrix(labels=...)`)."""
    index = {c: k for k, c in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix


def _per_class_scores(
    matrix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class of a confusion matrix, 0 where a ratio has
    nothing to divide by (scikit-learn's `precision_recall_fscore_support(zero_division=0)`)."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    f1 = ratio(2 * hits, (predicted + support).astype(np.float64))
    return (
        ratio(hits, predicted.astype(np.float64)),
        ratio(hits, support.astype(np.float64)),
        f1,
        support,
    )


def _top_confusions(y_true: list[str], y_pred: list[str]) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: which mix-ups cost the most products."""
    pairs = Counter((t, p) for t, p in zip(y_true, y_pred, strict=True) if t != p)
    ordered = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"true": t, "pred": p, "count": k} for (t, p), k in ordered[:N_TOP_CONFUSIONS]]


def evaluate_products(
    model: Model,
    products: Sequence[Product],
    proba: np.ndarray,
    *,
    inputs: Inputs | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """`evaluate` with the products' ids, titles and photos for the error gallery; with the
    model's `inputs` (and a fitted gate) also the gate's figures
    (`prodcat.gate.gate.gate_metrics`)."""
    labels = [format_path(p.label) if p.label else None for p in products]
    metrics = evaluate(
        labels,
        proba,
        model.classes,
        ids=[p.id for p in products],
        titles=[p.text for p in products],
        images=[str(p.image) if p.image else None for p in products],
    )
    if model.gate is not None and inputs is not None:
        y = class_indices(labels, model.classes)
        logits = model.head.decision_logits(inputs)
        metrics.update(gate_metrics(model.gate, inputs, logits, proba, y, threshold=threshold))
        # Class names rather than column indices for the classes never accepted.
        metrics["blocked_classes"] = {
            case: [model.classes[i] for i in blocked]
            for case, blocked in metrics["blocked_classes"].items()
        }
        metrics["class_thresholds"] = {
            case: {model.classes[i]: t for i, t in limits.items()}
            for case, limits in metrics["class_thresholds"].items()
        }
    return metrics
