"""Labels from people (the review desk's export) folded into a catalogue before training."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from prodcat.catalogue import Catalogue
from prodcat.taxonomy.tree import parse_path


@dataclass
class ExtraLabels:
    labels: dict[str, tuple[str, ...]]  # product id -> category path
    problems: list[str] = field(default_factory=list)  # one line per row left out, with why


def read_labels_csv(path: Path) -> ExtraLabels:
    """`id,category,...` rows; several answers for one id -> the most frequent, ties to the last."""
    votes: dict[str, list[str]] = {}
    problems = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"id", "category"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected id,category")
        for line, row in enumerate(reader, 2):
            pid, category = (row.get("id") or "").strip(), (row.get("category") or "").strip()
            if not pid or not category:
                problems.append(f"{path}:{line}: empty id or category; row left out")
                continue
            try:
                path_ = parse_path(category)
            except ValueError as exc:
                problems.append(f"{path}:{line}: {exc}; row left out")
                continue
            votes.setdefault(pid, []).append(" > ".join(path_))
    labels = {}
    for pid, cats in votes.items():
        counts = Counter(cats)
        best = max(counts.values())
        chosen = next(c for c in reversed(cats) if counts[c] == best)
        labels[pid] = parse_path(chosen)
    return ExtraLabels(labels, problems)


def apply_extra_labels(catalogue: Catalogue, extra: ExtraLabels) -> tuple[Catalogue, list[str]]:
    """The catalogue with people's labels overriding its own for the same id; and the ids of
    labels that match no product (reported, never silently dropped)."""
    known = {p.id for p in catalogue.products}
    products = [
        replace(p, label=extra.labels[p.id]) if p.id in extra.labels else p
        for p in catalogue.products
    ]
    unknown = sorted(set(extra.labels) - known)
    return replace(catalogue, products=products), unknown
