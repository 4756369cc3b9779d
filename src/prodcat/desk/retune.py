"""`prodcat retune`: move a model's accept thresholds when its blind audits show the promise broken.

The promise is the gate's target accuracy among accepted products. It is judged per modality
case (photo + title, photo only, title only; each has its own threshold) and overall, on the
answered audits of this model version (`prodcat.desk.audit`): it is broken where the upper end of
the 95% Clopper-Pearson interval of the audited accuracy is below the target (the audits show,
not merely suggest, that fewer than promised are right). When the overall figure is broken, every
case whose audited accuracy is below the target is broken too.

Only a broken case moves, and only up: to the lowest audited confidence at and above which the
audited products reach the target accuracy (above every audited confidence when even the most
confident audit was wrong). Audits are a uniform random sample of the accepted products, so those
above a confidence are a random sample of what the model accepts there: the rule reads the
accuracy the new threshold keeps straight off them. Nothing below the old threshold was audited,
so a threshold never moves down. The new model is a copy of the old folder with the gate's
thresholds changed and `threshold_source` saying where they came from; its version differs.
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodcat.desk.audit import CONFIDENCE, METHOD, AuditOutcome, audit_outcomes, proportion_interval
from prodcat.desk.db import Database, utcnow
from prodcat.gate.gate import Gate
from prodcat.model.bundle import Model, model_version
from prodcat.monitor.reference import REFERENCE_FILE, Reference


class RetuneError(ValueError):
    """A retune that cannot run as asked; the message says why."""


@dataclass
class CaseVerdict:
    """The audits of one modality case and what they say."""

    n: int
    correct: int
    low: float
    high: float
    broken: bool
    old: float
    new: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.correct / self.n if self.n else None,
            "low": self.low,
            "high": self.high,
            "broken": self.broken,
            "old_threshold": self.old,
            "new_threshold": self.new,
        }


@dataclass
class RetuneResult:
    """`verdict`: "broken" (a new model was written to `out`), "kept" or "untested" (no audits)."""

    verdict: str
    model_version: str
    target_accuracy: float
    n: int = 0
    correct: int = 0
    low: float = 0.0
    high: float = 1.0
    cases: dict[str, CaseVerdict] = field(default_factory=dict)
    unaudited: list[str] = field(default_factory=list)  # cases without audits: kept as they are
    out: Path | None = None
    new_version: str | None = None


def retune(db: Database, model: Model, out: Path) -> RetuneResult:
    """Judge a saved model's promise on its audits; write a retuned copy to `out` when broken."""
    if model.folder is None or not model.version:
        raise RetuneError("the model was never saved: its audits are recorded by its version")
    model_dir = model.folder
    if model.gate is None:
        raise RetuneError(f"{model_dir} has no gate: there is no accept threshold to retune")
    gate = model.gate
    outcomes = audit_outcomes(db, model.version)
    result = RetuneResult("untested", model.version, gate.target_accuracy)
    if not outcomes:
        return result
    result.n, result.correct = len(outcomes), sum(o.correct for o in outcomes)
    result.low, result.high = proportion_interval(result.correct, result.n)
    overall_broken = result.high < gate.target_accuracy
    for case, rows in _by_case(outcomes, gate).items():
        result.cases[case] = _judge(rows, gate.accept_thresholds[case], gate, overall_broken)
    result.unaudited = [c for c in gate.accept_thresholds if c not in result.cases]
    if not any(c.broken for c in result.cases.values()):
        result.verdict = "kept"
        return result
    result.verdict = "broken"
    result.out = _write(model_dir, out, result, outcomes)
    result.new_version = model_version(out)
    return result


def _by_case(outcomes: Sequence[AuditOutcome], gate: Gate) -> dict[str, list[AuditOutcome]]:
    """Audits per modality case the gate has a threshold for (rows without one: the main case)."""
    out: dict[str, list[AuditOutcome]] = defaultdict(list)
    for o in outcomes:
        case = o.gate_case if o.gate_case in gate.accept_thresholds else gate.main_case
        out[case].append(o)
    return dict(out)


def _judge(
    rows: Sequence[AuditOutcome], old: float, gate: Gate, overall_broken: bool
) -> CaseVerdict:
    k, n = sum(o.correct for o in rows), len(rows)
    low, high = proportion_interval(k, n)
    target = gate.target_accuracy
    broken = high < target or (overall_broken and k / n < target)
    new = max(old, audited_threshold(rows, target)) if broken else old
    return CaseVerdict(n, k, low, high, broken, old, new)


def audited_threshold(rows: Sequence[AuditOutcome], target: float) -> float:
    """The lowest audited confidence t at which the audits with confidence >= t are right at
    `target` or better; just above the highest audited confidence when there is none."""
    ordered = sorted(rows, key=lambda o: -o.confidence)
    best = math.nextafter(ordered[0].confidence, math.inf)
    right = 0
    for i, o in enumerate(ordered):
        right += o.correct
        ties_follow = i + 1 < len(ordered) and ordered[i + 1].confidence == o.confidence
        if not ties_follow and right / (i + 1) >= target:
            best = o.confidence
    return best


def _write(
    model_dir: Path, out: Path, result: RetuneResult, outcomes: Sequence[AuditOutcome]
) -> Path:
    """Copy the model folder to `out`, change the gate's thresholds and say where they came from."""
    if out.resolve() == model_dir.resolve():
        raise RetuneError("--out is the model's own folder: name a new folder")
    if out.exists() and any(out.iterdir()):
        raise RetuneError(f"--out {out} exists and is not empty: name a new folder")
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    gate = Gate.load(out / "gate")
    old = dict(gate.accept_thresholds)
    gate.accept_thresholds.update({c: v.new for c, v in result.cases.items()})
    answered = sorted(o.answered_at for o in outcomes)
    gate.threshold_source = {
        "from": "audits",
        "model_version": result.model_version,
        "audits": result.n,
        "correct": result.correct,
        "interval": [result.low, result.high],
        "method": METHOD,
        "confidence": CONFIDENCE,
        "target_accuracy": result.target_accuracy,
        "first_answer": answered[0].isoformat(timespec="seconds") + "Z",
        "last_answer": answered[-1].isoformat(timespec="seconds") + "Z",
        "retuned_at": utcnow().isoformat(timespec="seconds") + "Z",
        "old_thresholds": old,
        "new_thresholds": dict(gate.accept_thresholds),
        "cases": {c: v.as_dict() for c, v in result.cases.items()},
        "previous": gate.threshold_source,
    }
    gate.save(out / "gate")
    _forget_moved_decisions(out)
    return out


def _forget_moved_decisions(folder: Path) -> None:
    """The drift reference's accept / review shares were counted at the old thresholds: drop
    them, so the drift alarm stops comparing what retuning moved on purpose (the unknown share,
    the distributions and the class mix still compare)."""
    path = folder / REFERENCE_FILE
    if not path.is_file():
        return
    reference = Reference.load(path)
    reference.decisions = {d: n for d, n in reference.decisions.items() if d == "unknown"}
    reference.save(path)
