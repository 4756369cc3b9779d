"""The label audit from end to end: check the catalogue, score every product out of fold, find
the labels that are probably wrong, the classes that overlap and the duplicates that disagree.

`run_audit` returns an `AuditResult`; `AuditResult.as_json` is the file `prodcat audit --json`
writes, `prodcat.report.audit` renders the HTML, `prodcat.desk.label_checks` queues the suspects.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from prodcat.audit.duplicates import (
    DEFAULT_NEAR_SIMILARITY,
    PROJECTION_DIMS,
    DisagreeingDuplicate,
    identical_photos,
    near_identical,
)
from prodcat.audit.issues import RANK_BY, RANKINGS, LabelIssues, label_issues
from prodcat.audit.oof import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    AuditFeatures,
    design_matrix,
    folds_of,
    load_features,
    out_of_fold_proba,
    photo_axes_of,
    principal_axes,
)
from prodcat.catalogue import Catalogue, Product
from prodcat.features.cache import FeatureCache
from prodcat.taxonomy.tree import format_path

DEFAULT_FOLDS = 5


class AuditError(ValueError):
    """A catalogue the audit cannot check; the message says what it needs."""


@dataclass(frozen=True)
class AuditOptions:
    folds: int = DEFAULT_FOLDS
    rank_by: str = RANK_BY  # "self_confidence" or "normalized_margin"
    image_encoder: str = DEFAULT_IMAGE_ENCODER
    text_encoder: str = DEFAULT_TEXT_ENCODER
    near_similarity: float = DEFAULT_NEAR_SIMILARITY
    seed: int = 0
    progress: bool = True  # progress bars on stderr

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise AuditError(f"--folds {self.folds}: expected 2 or more (5 is the default)")
        if self.rank_by not in RANKINGS:
            raise AuditError(f"rank by {self.rank_by!r}: expected one of {', '.join(RANKINGS)}")
        if not 0.0 < self.near_similarity <= 1.0:
            raise AuditError(
                f"near-duplicate similarity {self.near_similarity}: expected a cosine in (0, 1]"
            )


@dataclass(frozen=True)
class Suspect:
    """A product whose label is probably wrong."""

    id: str
    title: str
    image: str | None
    given: str
    suggested: str
    score: float  # 1 - cleanlab's label quality: higher is more likely wrong
    given_probability: float  # out of fold
    suggested_probability: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "given": self.given,
            "suggested": self.suggested,
            "score": round(self.score, 6),
        }


@dataclass
class AuditResult:
    n_products: int  # products audited
    issues: list[Suspect]  # most likely wrong first
    estimated_error_rate: float
    class_error_rates: dict[str, float]
    class_overlap: list[dict[str, Any]]
    duplicates: list[DisagreeingDuplicate]
    # Classes with fewer labelled products than folds, left out: class -> products.
    not_audited: dict[str, int] = field(default_factory=dict)
    n_unlabelled: int = 0
    out_of_fold_accuracy: float = 0.0
    options: AuditOptions = field(default_factory=AuditOptions)
    seconds: dict[str, float] = field(default_factory=dict)
    # What the flags were found from, for studies (the benchmark re-ranks them): the audited
    # products' ids, the classes, given class indices and out-of-fold probabilities.
    ids: list[str] = field(default_factory=list, repr=False)
    classes: list[str] = field(default_factory=list, repr=False)
    y: np.ndarray | None = field(default=None, repr=False)
    proba: np.ndarray | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        """The `--json` file: issues ranked most likely wrong first, and the figures."""
        return {
            "issues": [s.as_json() for s in self.issues],
            "n_products": self.n_products,
            "n_issues": len(self.issues),
            "estimated_error_rate": {
                "overall": round(self.estimated_error_rate, 6),
                "per_class": {c: round(r, 6) for c, r in self.class_error_rates.items()},
            },
            "class_overlap": self.class_overlap,
            "duplicates": [d.as_dict() for d in self.duplicates],
            "not_audited": {
                "classes": self.not_audited,
                "why": f"fewer than {self.options.folds} labelled products (--folds)",
                "n_unlabelled": self.n_unlabelled,
            },
            "out_of_fold_accuracy": round(self.out_of_fold_accuracy, 6),
            "settings": {
                "folds": self.options.folds,
                "rank_by": self.options.rank_by,
                "image_encoder": self.options.image_encoder,
                "text_encoder": self.options.text_encoder,
                "near_similarity": self.options.near_similarity,
                "seed": self.options.seed,
            },
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def audited_products(
    catalogue: Catalogue | Sequence[Product], folds: int
) -> tuple[list[Product], dict[str, int], int]:
    """(the products the audit checks, classes left out with their counts, unlabelled count);
    raises `AuditError` for a catalogue it cannot check."""
    products = list(catalogue.products if isinstance(catalogue, Catalogue) else catalogue)
    labelled = [p for p in products if p.label]
    if not labelled:
        raise AuditError(
            "the catalogue has no labelled products: the audit checks the labels a catalogue has; "
            "name its category column (--label-column, or --label-columns for one per level)"
        )
    counts = Counter(format_path(p.label or ()) for p in labelled)
    if len(counts) < 2:
        raise AuditError(
            f"every labelled product has the same category ({next(iter(counts))}): the audit "
            "compares classes and needs labelled products of at least 2 categories"
        )
    enough = {c for c, n in counts.items() if n >= folds}
    if len(enough) < 2:
        raise AuditError(
            f"too few products per class for {folds} folds: a class needs at least {folds} "
            f"labelled products to be scored out of fold, and {len(enough)} of {len(counts)} "
            f"classes have that (largest: {_largest(counts)}); "
            "add labelled products or lower --folds (2 at least)"
        )
    kept = [p for p in labelled if format_path(p.label or ()) in enough]
    left_out = {c: n for c, n in sorted(counts.items()) if c not in enough}
    return kept, left_out, len(products) - len(labelled)


def _largest(counts: Counter[str]) -> str:
    return ", ".join(f"{c} ({n})" for c, n in counts.most_common(3))


def run_audit(
    catalogue: Catalogue | Sequence[Product],
    cache: FeatureCache,
    options: AuditOptions | None = None,
) -> AuditResult:
    """Audit the labels of `catalogue` (see the module's docstring)."""
    options = options or AuditOptions()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    products, left_out, n_unlabelled = audited_products(catalogue, options.folds)
    labels = [format_path(p.label or ()) for p in products]
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels], dtype=np.int64)

    step = time.perf_counter()
    features = load_features(
        products,
        cache,
        image_encoder=options.image_encoder,
        text_encoder=options.text_encoder,
        progress=options.progress,
    )
    seconds["features"] = time.perf_counter() - step
    # One BLAS thread: two spin against each other on a shared 2-core machine (an
    # eigendecomposition took 9.5 s with two threads against 1.1 s with one under load).
    with threadpool_limits(limits=1, user_api="blas"):
        found, proba, duplicates = _analyse(
            products, labels, classes, y, features, options, seconds
        )
    seconds["total"] = time.perf_counter() - start
    return AuditResult(
        n_products=len(products),
        issues=_suspects(
            products, labels, classes, proba, found.rows, found.scores, found.suggested
        ),
        estimated_error_rate=found.error_rate,
        class_error_rates={
            c: float(r) for c, r in zip(classes, found.class_error_rates, strict=True)
        },
        class_overlap=found.overlap,
        duplicates=duplicates,
        not_audited=left_out,
        n_unlabelled=n_unlabelled,
        out_of_fold_accuracy=float((proba.argmax(axis=1) == y).mean()),
        options=options,
        seconds=seconds,
        ids=[p.id for p in products],
        classes=classes,
        y=y,
        proba=proba,
    )


def _analyse(
    products: Sequence[Product],
    labels: Sequence[str],
    classes: Sequence[str],
    y: np.ndarray,
    features: AuditFeatures,
    options: AuditOptions,
    seconds: dict[str, float],
) -> tuple[LabelIssues, np.ndarray, list[DisagreeingDuplicate]]:
    """Out-of-fold probabilities, confident learning, duplicates; times each in `seconds`."""
    step = time.perf_counter()
    photo_axes = photo_axes_of(features, options.seed)
    x = design_matrix(features, photo_axes)
    fold = folds_of(products, options.folds, options.seed)
    proba = out_of_fold_proba(x, y, len(classes), fold, progress=options.progress)
    seconds["out_of_fold"] = time.perf_counter() - step

    step = time.perf_counter()
    found = label_issues(y, proba, classes, rank_by=options.rank_by)
    seconds["confident_learning"] = time.perf_counter() - step
    step = time.perf_counter()
    duplicates = identical_photos(products, labels) + near_identical(
        products,
        labels,
        features.image,
        features.text,
        threshold=options.near_similarity,
        photo_axes=photo_axes,
        text_axes=_text_axes(features.text, features.has_text, options.seed),
        progress=options.progress,
    )
    seconds["duplicates"] = time.perf_counter() - step
    return found, proba, duplicates


def _text_axes(text: np.ndarray, has_text: np.ndarray, seed: int) -> np.ndarray | None:
    rows = np.flatnonzero(has_text)
    return (
        principal_axes(text, rows, PROJECTION_DIMS, seed) if len(rows) > PROJECTION_DIMS else None
    )


def _suspects(
    products: Sequence[Product],
    labels: Sequence[str],
    classes: Sequence[str],
    proba: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
    suggested: np.ndarray,
) -> list[Suspect]:
    out = []
    for row, score, other in zip(rows, scores, suggested, strict=True):
        product = products[row]
        given = labels[row]
        out.append(
            Suspect(
                id=product.id,
                title=product.text,
                image=str(product.image) if product.image else None,
                given=given,
                suggested=classes[other],
                score=float(score),
                given_probability=float(proba[row, classes.index(given)]),
                suggested_probability=float(proba[row, other]),
            )
        )
    return out
