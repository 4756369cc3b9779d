"""The gate: calibrated confidence, then accept / review / unknown for every prediction.

Fitted after the head, never on the test part. The *calibration products* are the validation
part scored by the shipped head, or (what `train` passes by default) the training and validation
parts scored out of fold by heads cross-fitted on the other folds (`prodcat.training.crossfit`).

1. Temperature scaling, one temperature per *modality case* (photo + title, photo only, title
   only): the same network is over-confident by different amounts depending on what it sees, so
   each case is calibrated on the calibration products shown only that modality.
2. The accept threshold per case, with a finite-sample guarantee: the accepted error rate is at
   most 1 - target with probability >= 1 - delta (`prodcat.gate.calibration.certify_threshold`:
   Learn-then-Test with exact binomial bounds). The evidence (products, errors, the guaranteed
   accuracy) is kept in `Gate.guarantee`.
3. Per class: a class whose own accepted calibration products contradict the target
   (`prodcat.gate.calibration.unsupported_classes`) gets its own certified threshold, above the
   case's, from its products alone; when none can be certified it is never accepted
   (`Gate.class_thresholds`, `Gate.blocked_classes`).
4. The out-of-distribution scorer (`prodcat.gate.ood`) and, per case, the `unknown` threshold: the
   99th percentile of the validation *in-class* scores. It is chosen without any out-of-class
   product (we never know in advance what new kinds of product will arrive); 99% rather than 95%
   because every in-class product flagged is one a person must label, and the accept target
   leaves only a few percent of products for review in the first place.

Decision, per product: ``unknown`` if its OOD score is above its case's unknown threshold,
else ``accept`` if its calibrated top probability reaches the case's accept threshold (or the
threshold given at predict time) and its predicted class's own threshold, else ``review``. A
product with neither modality is reviewed.
Saved as ``gate/gate.json`` + ``gate/ood.safetensors`` in the model directory (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from prodcat.gate.calibration import (
    ACCEPT_NOTHING,
    DEFAULT_DELTA,
    ThresholdChoice,
    calibration_summary,
    certify_threshold,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from prodcat.gate.certificate import CaseData, class_thresholds, guarantee_record
from prodcat.gate.ood import OodScorer, auroc, flagged_at, prototype_rule
from prodcat.heads import Head, Inputs
from prodcat.heads.inputs import restrict

# What the gate decides for a product: labelled automatically, sent to a person with suggestions,
# or flagged as a kind of product the model does not know (also sent to a person).
DECISIONS = ("accept", "review", "unknown")
CASES = ("image+text", "image", "text")
NONE = "none"
DEFAULT_TARGET_ACCURACY = 0.995
UNKNOWN_QUANTILE = 0.99
GATE_FORMAT = 1
# Where the accept thresholds came from; this default: chosen when the model was trained, on its
# held-out labelled products. `prodcat retune` replaces it with {"from": "audits", ...}.
TRAINED_THRESHOLDS: dict[str, Any] = {"from": "training"}


@dataclass
class Gate:
    """Per-case temperatures and thresholds, and the OOD scorer; see the module docstring."""

    uses_image: bool
    uses_text: bool
    target_accuracy: float
    temperatures: dict[str, float]
    accept_thresholds: dict[str, float]
    unknown_thresholds: dict[str, float]
    ood: OodScorer | None
    validation: dict[str, Any] = field(default_factory=dict)
    threshold_source: dict[str, Any] = field(default_factory=lambda: dict(TRAINED_THRESHOLDS))
    # The thresholds' evidence: delta, calibration products, accepted, errors, the guaranteed
    # (lower-bound) accepted accuracy, overall and per case (`fit_gate`).
    guarantee: dict[str, Any] = field(default_factory=dict)
    # Per case, class index -> its own accept threshold, for the classes whose calibration evidence
    # at the case's threshold cannot support the target; ACCEPT_NOTHING: never accepted.
    class_thresholds: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def blocked_classes(self) -> dict[str, list[int]]:
        """Per case, the classes never accepted automatically (no threshold could be certified)."""
        return {
            case: sorted(c for c, t in limits.items() if t >= ACCEPT_NOTHING)
            for case, limits in self.class_thresholds.items()
        }

    # -- applying -------------------------------------------------------------------------
    def cases(self, inputs: Inputs) -> np.ndarray:
        """Per product: 'image+text', 'image', 'text' or 'none' (of the modalities used)."""
        return modality_cases(inputs, self.uses_image, self.uses_text)

    def calibrate(self, logits: np.ndarray, inputs: Inputs) -> np.ndarray:
        """Probabilities from logits, each product divided by its case's temperature."""
        cases = self.cases(inputs)
        temperature = np.array([self.temperatures.get(c, 1.0) for c in cases], dtype=np.float64)
        return softmax(np.asarray(logits, dtype=np.float64) / temperature[:, None])

    def ood_scores(self, inputs: Inputs, logits: np.ndarray) -> np.ndarray:
        """The combined OOD score per product (NaN without a scorer or any input)."""
        if self.ood is None:
            return np.full(len(inputs), np.nan)
        return self.ood.combine(self.ood_signals(inputs, logits))

    def ood_signals(self, inputs: Inputs, logits: np.ndarray) -> dict[str, np.ndarray]:
        if self.ood is None:
            raise ValueError("this gate has no out-of-distribution scorer (fitted without one)")
        return self.ood.signals(
            image=inputs.image if self.uses_image else None,
            image_mask=inputs.has_image & self.uses_image,
            text=inputs.text if self.uses_text else None,
            text_mask=inputs.has_text & self.uses_text,
            texts=inputs.texts if self.uses_text else [""] * len(inputs),
            logits=logits,
        )

    def decide(
        self,
        proba: np.ndarray,
        ood_scores: np.ndarray,
        cases: np.ndarray,
        *,
        threshold: float | None = None,
    ) -> list[str]:
        """accept / review / unknown per product; `threshold` overrides every case's threshold
        and the classes' own (a threshold someone chose carries no certificate)."""
        confidence = np.asarray(proba).max(axis=1)
        predicted = np.asarray(proba).argmax(axis=1)
        out = []
        for conf, score, case, k in zip(confidence, ood_scores, cases, predicted, strict=True):
            if case == NONE:
                out.append("review")
            elif np.isfinite(score) and score > self.unknown_thresholds.get(case, np.inf):
                out.append("unknown")
            else:
                limit = self.accept_limit(case, int(k)) if threshold is None else threshold
                out.append("accept" if conf >= limit else "review")
        return out

    def accept_limit(self, case: str, predicted: int) -> float:
        """The confidence a product of `case` predicted as class `predicted` must reach."""
        own = self.class_thresholds.get(case, {}).get(predicted, 0.0)
        return max(self.accept_thresholds[case], own)

    @property
    def main_case(self) -> str:
        if self.uses_image and self.uses_text:
            return "image+text"
        return "image" if self.uses_image else "text"

    # -- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "format": GATE_FORMAT,
            "uses_image": self.uses_image,
            "uses_text": self.uses_text,
            "target_accuracy": self.target_accuracy,
            "temperatures": self.temperatures,
            "accept_thresholds": self.accept_thresholds,
            "unknown_thresholds": self.unknown_thresholds,
            "unknown_quantile": UNKNOWN_QUANTILE,
            "validation": self.validation,
            "threshold_source": self.threshold_source,
            "guarantee": self.guarantee,
            "class_thresholds": {
                case: {str(c): t for c, t in limits.items()}
                for case, limits in self.class_thresholds.items()
            },
            "ood": None if self.ood is None else self.ood.config(),
        }
        (path / "gate.json").write_text(json.dumps(config, indent=1, ensure_ascii=False))
        if self.ood is not None:
            arrays = {k: np.ascontiguousarray(v) for k, v in self.ood.arrays().items()}
            safetensors.numpy.save_file(arrays, str(path / "ood.safetensors"))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Gate:
        path = Path(folder)
        config = json.loads((path / "gate.json").read_text())
        if config.get("format") != GATE_FORMAT:
            raise ValueError(
                f"{path / 'gate.json'} has format {config.get('format')!r}; expected "
                f"{GATE_FORMAT}: retrain the model"
            )
        ood = None
        if config.get("ood") is not None:
            weights = path / "ood.safetensors"
            arrays = safetensors.numpy.load_file(str(weights)) if weights.exists() else {}
            ood = OodScorer.from_saved(config["ood"], arrays)
        return cls(
            uses_image=config["uses_image"],
            uses_text=config["uses_text"],
            target_accuracy=config["target_accuracy"],
            temperatures=config["temperatures"],
            accept_thresholds=config["accept_thresholds"],
            unknown_thresholds=config["unknown_thresholds"],
            ood=ood,
            validation=config.get("validation", {}),
            threshold_source=config.get("threshold_source", dict(TRAINED_THRESHOLDS)),
            # Models saved before the guarantee have none (and block no class).
            guarantee=config.get("guarantee", {}),
            class_thresholds={
                case: {int(c): float(t) for c, t in limits.items()}
                for case, limits in config.get("class_thresholds", {}).items()
            },
        )


def fit_gate(
    head: Head,
    *,
    train_inputs: Inputs,
    train_y: np.ndarray,
    validation_inputs: Inputs,
    validation_y: np.ndarray,
    uses_image: bool,
    uses_text: bool,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    seed: int = 0,
    calibration: CaseData | None = None,
    delta: float = DEFAULT_DELTA,
    folds: int = 0,
) -> Gate:
    """Fit the gate after the head: `*_y` are class indices, -1 for an out-of-class product.

    `calibration`: per case, (logits, class indices) of the products to calibrate on (cross-fitted
    out of fold, `folds` of them); None: the validation part scored by `head`. The OOD reference
    and the validation figures always come from the validation part scored by `head`.
    """
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"--target-accuracy {target_accuracy}; expected a number in (0, 1]")
    train_y, validation_y = np.asarray(train_y), np.asarray(validation_y)
    ood = _fit_ood(train_inputs, train_y, uses_image, uses_text, seed)
    gate = Gate(uses_image, uses_text, target_accuracy, {}, {}, {}, ood)
    validation = _validation_cases(gate, head, validation_inputs, validation_y)
    if calibration is None:
        calibration = {case: (logits, y) for case, (_, logits, y) in validation.items()}
    choices: dict[str, ThresholdChoice] = {}
    for case, (logits, y) in calibration.items():
        if len(y) == 0:
            continue
        gate.temperatures[case] = fit_temperature(logits, y)
        proba = softmax(logits, gate.temperatures[case])
        correct = proba.argmax(axis=1) == y
        choices[case] = certify_threshold(proba.max(axis=1), correct, target_accuracy, delta)
        gate.accept_thresholds[case] = choices[case].threshold
    for case in model_cases(uses_image, uses_text):  # cases without calibration products
        gate.temperatures.setdefault(case, 1.0)
        gate.accept_thresholds.setdefault(case, ACCEPT_NOTHING)
    # A case that accepts nothing holds back every class already: nothing to add.
    gate.class_thresholds = {
        case: class_thresholds(gate, case, *calibration[case], len(head.classes_), delta)
        for case, choice in choices.items()
        if choice.n_accepted
    }
    gate.guarantee = guarantee_record(gate, calibration, choices, delta, folds)
    for case, (_, logits, y) in validation.items():
        proba = softmax(logits, gate.temperatures[case])
        gate.validation[case] = _case_figures(gate, case, logits, proba, y)
    if ood is not None and validation:
        signals = {c: gate.ood_signals(inputs, lg) for c, (inputs, lg, _) in validation.items()}
        every = list(signals.values())
        ood.set_scales({k: np.concatenate([s[k] for s in every]) for k in every[0]})
        for case, case_signals in signals.items():
            scores = ood.combine(case_signals)
            finite = scores[np.isfinite(scores)]
            if len(finite):
                gate.unknown_thresholds[case] = float(np.quantile(finite, UNKNOWN_QUANTILE))
    return gate


def _validation_cases(
    gate: Gate, head: Head, inputs: Inputs, y: np.ndarray
) -> dict[str, tuple[Inputs, np.ndarray, np.ndarray]]:
    """Per case: the in-class validation products shown only that case, their logits, classes."""
    out = {}
    for case in model_cases(gate.uses_image, gate.uses_text):
        shown = restrict(inputs, case.split("+"))
        rows = (gate.cases(shown) == case) & (y >= 0)
        if rows.any():
            subset = shown.subset(rows)
            out[case] = (subset, head.decision_logits(subset), y[rows])
    return out


def modality_cases(inputs: Inputs, uses_image: bool, uses_text: bool) -> np.ndarray:
    """Per product: 'image+text', 'image', 'text' or 'none' (of the modalities a model uses)."""
    image = inputs.has_image & uses_image
    text = inputs.has_text & uses_text
    out = np.full(len(inputs), NONE, dtype=object)
    out[image & text] = "image+text"
    out[image & ~text] = "image"
    out[~image & text] = "text"
    return out


def model_cases(uses_image: bool, uses_text: bool) -> list[str]:
    """The modality cases a model that uses these modalities is calibrated for."""
    if uses_image and uses_text:
        return list(CASES)
    return ["image"] if uses_image else ["text"]


def _fit_ood(
    inputs: Inputs, y: np.ndarray, uses_image: bool, uses_text: bool, seed: int
) -> OodScorer | None:
    rows = y >= 0
    if not rows.any():
        return None
    known = inputs.subset(rows)
    return OodScorer.fit(
        image=known.image if uses_image else None,
        image_mask=known.has_image,
        text=known.text if uses_text else None,
        text_mask=known.has_text,
        texts=known.texts if uses_text else [],
        seed=seed,
    )


def _case_figures(
    gate: Gate, case: str, logits: np.ndarray, proba: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    raw = softmax(logits)
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    accepted = conf >= gate.accept_thresholds[case]
    return {
        "n": len(y),
        "temperature": gate.temperatures[case],
        "accuracy": float(correct.mean()),
        "ece_uncalibrated": expected_calibration_error(raw.max(axis=1), correct),
        "ece": expected_calibration_error(conf, correct),
        "accept_threshold": gate.accept_thresholds[case],
        "coverage": float(accepted.mean()),
        "accepted_accuracy": float(correct[accepted].mean()) if accepted.any() else None,
    }


# -- measuring ------------------------------------------------------------------------------
def gate_metrics(
    gate: Gate,
    inputs: Inputs,
    logits: np.ndarray,
    proba: np.ndarray,
    y: np.ndarray,
    *,
    threshold: float | None = None,
) -> dict[str, Any]:
    """The gate's figures on labelled products (`y`: class index, -1 out of class, -2 unlabelled).

    `logits` are the head's, `proba` the calibrated probabilities the decisions are made from.

    coverage / accepted_accuracy / review_top3 / ECE count in-class products only (as
    `prodcat.training.metrics` does); the OOD figures compare in-class with out-of-class products.
    """
    y = np.asarray(y)
    cases = gate.cases(inputs)
    # The signals once: the score and the side-by-side comparison both need them.
    signals = gate.ood_signals(inputs, logits) if gate.ood is not None else {}
    scores = gate.ood.combine(signals) if gate.ood is not None else np.full(len(y), np.nan)
    decisions = np.array(gate.decide(proba, scores, cases, threshold=threshold), dtype=object)
    inside, outside = y >= 0, y == -1
    conf = proba.max(axis=1)
    correct = np.zeros(len(y), dtype=bool)
    correct[inside] = proba[inside].argmax(axis=1) == y[inside]
    top3 = np.zeros(len(y), dtype=bool)
    top3[inside] = np.any(np.argsort(-proba[inside], axis=1)[:, :3] == y[inside, None], axis=1)
    accepted, review = inside & (decisions == "accept"), inside & (decisions == "review")
    calibration = calibration_summary(softmax(logits), proba, np.where(inside, y, -1))
    out: dict[str, Any] = {
        "coverage": _share(accepted, inside),
        "accepted_accuracy": _share(correct & accepted, accepted),
        "review_top3": _share(top3 & review, review),
        "ece": calibration["calibrated"]["ece"],
        "ece_uncalibrated": calibration["uncalibrated"]["ece"],
        "reliability": calibration,
        "decisions": {d: int(np.sum(inside & (decisions == d))) for d in DECISIONS},
        "unknown_share": _share(inside & (decisions == "unknown"), inside),
        "coverage_curve": coverage_curve(conf[inside], correct[inside]),
        "accept_thresholds": gate.accept_thresholds if threshold is None else threshold,
        "target_accuracy": gate.target_accuracy,
        # What the thresholds were certified on (the same for every catalogue measured).
        "guaranteed_accuracy": gate.guarantee.get("guaranteed_accuracy"),
        "n_calibration": gate.guarantee.get("n_calibration"),
        "delta": gate.guarantee.get("delta"),
        "guarantee": gate.guarantee,
        "blocked_classes": gate.blocked_classes,  # indices; evaluate names them
        "class_thresholds": gate.class_thresholds,
        "cases": {c: int(np.sum(inside & (cases == c))) for c in (*CASES, NONE)},
    }
    if outside.any() and inside.any():
        out.update(
            _ood_comparison(gate, inputs, signals, proba, scores, inside, outside, decisions)
        )
    return out


def _ood_comparison(
    gate: Gate,
    inputs: Inputs,
    signals: dict[str, np.ndarray],
    proba: np.ndarray,
    scores: np.ndarray,
    inside: np.ndarray,
    outside: np.ndarray,
    decisions: np.ndarray,
) -> dict[str, Any]:
    """AUROC and flagged-at-95%-pass for the gate's score, the prototype's rule, max-softmax."""
    candidates: dict[str, np.ndarray] = {"ood_score": scores, "max_softmax": 1 - proba.max(axis=1)}
    if gate.ood is not None and gate.uses_text:
        candidates["prototype_rule"] = prototype_rule(
            inputs.texts, gate.ood.vocabulary, gate.ood.token_pattern
        )
    for name, values in signals.items():
        candidates[f"signal:{name}"] = values
    comparison = {
        name: {
            "auroc": auroc(values[inside], values[outside]),
            "flagged_at_95": flagged_at(values[inside], values[outside], 0.95),
        }
        for name, values in candidates.items()
    }
    return {
        "ood_auroc": comparison["ood_score"]["auroc"],
        "ood_flagged_at_95": comparison["ood_score"]["flagged_at_95"],
        "ood_comparison": comparison,
        "n_out_of_class_unknown": int(np.sum(outside & (decisions == "unknown"))),
        "n_out_of_class_accepted": int(np.sum(outside & (decisions == "accept"))),
    }


def _share(part: np.ndarray, whole: np.ndarray) -> float | None:
    n = int(np.sum(whole))
    return float(np.sum(part) / n) if n else None


def class_indices(labels: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """Class index per product: -1 for a class the model lacks, -2 for an unlabelled product."""
    index = {c: j for j, c in enumerate(classes)}
    return np.array([-2 if not label else index.get(label, -1) for label in labels], dtype=np.int64)
