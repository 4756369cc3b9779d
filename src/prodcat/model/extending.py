"""Extending a saved model: labelled examples and category names -> a model with more classes.

`extend_model` encodes the examples with the model's own encoders, puts them in the prototype
space (`prodcat.model.extension`), calibrates the prototypes' and the names' scores against the
head on the model's stored validation sample, counts each young class's evidence for the gate
(`prodcat.gate.young`) and lets the OOD score know the examples. The head is never refitted.
Extending an extended model keeps what it had and adds to it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.catalogue import Product
from prodcat.encoders.base import unit_rows
from prodcat.encoders.registry import split_encoders
from prodcat.features.cache import FeatureCache
from prodcat.gate.calibration import ACCEPT_NOTHING, softmax
from prodcat.gate.young import with_known_examples, with_young_classes, young_class_thresholds
from prodcat.heads import Inputs
from prodcat.model.bundle import Model, model_version
from prodcat.model.extension import (
    EXTENSION_DIR,
    PHOTO_WEIGHT,
    SAMPLE_FILE,
    CalibrationSample,
    ExtendError,
    Extension,
    Space,
    leaf_names,
)
from prodcat.model.extension_fit import ZERO_SHOT_ENCODER, calibrate, encode_names
from prodcat.monitor.reference import REFERENCE_FILE
from prodcat.taxonomy.tree import format_path, parse_path


@dataclass
class ExtendResult:
    model: Model
    added: list[str]  # new classes with examples
    zero_shot: list[str]  # new classes from a name alone
    examples: dict[str, int]  # class -> examples given now (known classes are strengthened)
    left_out: dict[str, str] = field(default_factory=dict)  # example id -> why it was not used
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # young class -> counts
    seconds: float = 0.0


def extend_model(
    model: Model,
    examples: Sequence[Product],
    *,
    categories: Sequence[str] = (),
    cache: FeatureCache,
    seed: int = 0,
    photo_weight: float = PHOTO_WEIGHT,
) -> ExtendResult:
    """`model` with the examples' new categories added and its known ones strengthened; the
    `categories` no example has are added zero-shot (scored by their name, never accepted).
    `photo_weight`: the photo's share of the prototype similarity (a first extension only; an
    extended model keeps its space)."""
    start = time.perf_counter()
    sample = _sample_of(model)
    prior = model.extension
    n_base = len(model.head.classes_)
    labels = _example_labels(examples)
    names = [format_path(parse_path(c)) for c in categories]  # an empty level: a clear error
    known = model.classes
    new = sorted(set(labels) - set(known))
    zero = [c for c in dict.fromkeys(names) if c not in known and c not in new]
    added = (prior.classes if prior else []) + new + zero
    index = {c: i for i, c in enumerate(known[:n_base] + added)}

    inputs, errors = model.encode(examples, cache, progress=False)
    usable = inputs.has_image | inputs.has_text
    left_out = {
        p.id: errors.get(p.id, "neither its photo nor its title could be encoded")
        for p, ok in zip(examples, usable, strict=True)
        if not ok
    }
    inputs = inputs.subset(usable)
    used = [label for label, ok in zip(labels, usable, strict=True) if ok]
    space = prior.space if prior else _space(sample, model, photo_weight)
    extension = Extension(
        n_base=n_base,
        classes=added,
        space=space,
        examples=_stacked(prior.examples if prior else None, space.embed_inputs(inputs)),
        example_class=np.concatenate(
            [
                prior.example_class if prior else np.zeros(0, np.int64),
                np.array([index[label] for label in used], dtype=np.int64),
            ]
        ),
        text_slice=prior.text_slice if prior else _minilm_slice(model),
        info=dict(prior.info) if prior else {},
    )
    head_log_p = _head_log_p(model, inputs)
    _keep_example_log_p(extension, prior, head_log_p)
    _add_names(extension, prior, zero, [index[c] for c in zero], model)
    main, sample_inputs, sample_log_p = _sample_main_case(model, sample)
    calibrate(extension, sample, main, sample_inputs, sample_log_p, known[:n_base], seed)
    gate, evidence = _gate_for(model, extension, sample, main, sample_inputs, sample_log_p)
    if gate is not None and len(inputs):
        gate = with_known_examples(
            gate,
            image=inputs.image,
            image_mask=inputs.has_image,
            text=inputs.text,
            text_mask=inputs.has_text,
            texts=inputs.texts,
        )
    all_classes = known[:n_base] + added
    owners = Counter(int(c) for c in extension.example_class)
    extension.info.update(
        {
            "examples": {all_classes[c]: n for c, n in sorted(owners.items())},
            "zero_shot": [all_classes[c] for c in extension.zero_shot_classes],
            "evidence": evidence,
        }
    )
    reference = model.reference
    if reference is not None:  # the drift alarm's class mix: the added classes had no products
        missing = len(all_classes) - len(reference.class_counts)
        counts = reference.class_counts + [0] * missing
        reference = dataclasses.replace(reference, class_counts=counts)
    extended = dataclasses.replace(
        model, gate=gate, extension=extension, reference=reference, folder=None, version=""
    )
    # Read from the model's folder when asked for, not fields: carried over by hand.
    extended.neighbours, extended.extension_sample = model.neighbours, model.extension_sample
    return ExtendResult(
        model=extended,
        added=new,
        zero_shot=zero,
        examples=dict(Counter(used)),
        left_out=left_out,
        evidence=evidence,
        seconds=time.perf_counter() - start,
    )


# -- the pieces ------------------------------------------------------------------------------
def _sample_of(model: Model) -> CalibrationSample:
    if model.extension_sample is None:
        raise ExtendError(
            f"{model.folder or 'this model'} has no calibration sample ({SAMPLE_FILE}): it was "
            "trained before `prodcat extend` existed; train it again with this prodcat"
        )
    return model.extension_sample


def _example_labels(examples: Sequence[Product]) -> list[str]:
    missing = [p.id for p in examples if not p.label]
    if missing:
        raise ExtendError(
            f"{len(missing)} example(s) have no category (ids {', '.join(missing[:5])}); every "
            "example needs one: pass the category column with --label-column / --label-columns"
        )
    return [format_path(p.label or ()) for p in examples]


def _space(sample: CalibrationSample, model: Model, photo_weight: float) -> Space:
    """Centred on the validation sample's means (photo features are all positive otherwise)."""

    def mean(values: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
        if values is None or not mask.any():
            return None
        out: np.ndarray = values[mask].mean(axis=0).astype(np.float32)
        return out

    return Space(
        mean(sample.image, sample.image_mask) if model.image_encoder else None,
        mean(sample.text, sample.text_mask) if model.text_encoder else None,
        photo_weight,
    )


def _minilm_slice(model: Model) -> tuple[int, int] | None:
    """Where the MiniLM title embedding sits in the model's text features (None: it has none)."""
    start = 0
    for part in split_encoders(model.text_encoder or ""):
        dim = int(model.get_encoder(part).dim)
        if part == ZERO_SHOT_ENCODER:
            return (start, start + dim)
        start += dim
    return None


def _stacked(old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    return new if old is None or not len(old) else np.vstack([old, new])


def _head_log_p(model: Model, inputs: Inputs) -> np.ndarray:
    """The head's calibrated log-probabilities (no extension merged)."""
    logits = model.head.decision_logits(inputs) if len(inputs) else np.zeros((0, 0))
    if not len(inputs):
        return np.zeros((0, len(model.head.classes_)))
    proba = model.gate.calibrate(logits, inputs) if model.gate is not None else softmax(logits)
    return np.log(np.maximum(proba, 1e-12))


def _keep_example_log_p(ext: Extension, prior: Extension | None, log_p: np.ndarray) -> None:
    old = prior.example_log_p if prior is not None else None
    ext.example_log_p = _stacked(old, log_p.astype(np.float32))


def _add_names(
    ext: Extension, prior: Extension | None, zero: list[str], indices: list[int], model: Model
) -> None:
    """Embed the zero-shot categories' names with the title encoder."""
    if prior is not None and len(prior.name_class):
        ext.names, ext.name_class = prior.names, prior.name_class
        ext.name_scale, ext.name_bias = prior.name_scale, prior.name_bias
        ext.name_confidence_scale = prior.name_confidence_scale
    if not zero:
        return
    if ext.text_slice is None:
        raise ExtendError(
            f"zero-shot categories ({', '.join(zero)}) are scored with the {ZERO_SHOT_ENCODER} "
            f"title encoder, which this model does not use (its text encoder: "
            f"{model.text_encoder}); give examples for them instead"
        )
    embedded = encode_names(leaf_names(zero))
    ext.names = embedded if not len(ext.name_class) else np.vstack([ext.names, embedded])
    ext.name_class = np.concatenate([ext.name_class, np.array(indices, dtype=np.int64)])


def _sample_main_case(
    model: Model, sample: CalibrationSample
) -> tuple[np.ndarray, Inputs, np.ndarray]:
    """The sample's products that have every modality the model reads: rows, inputs, the head's
    calibrated log-probabilities."""
    main = np.ones(len(sample), dtype=bool)
    if model.image_encoder:
        main &= sample.image_mask
    if model.text_encoder:
        main &= sample.text_mask
    rows = np.flatnonzero(main)
    inputs = Inputs(
        texts=[""] * len(rows),
        image=None if sample.image is None else sample.image[rows],
        text=None if sample.text is None else sample.text[rows],
        image_mask=sample.image_mask[rows],
        text_mask=sample.text_mask[rows],
    )
    temperature = model.gate.temperatures.get(model.gate.main_case, 1.0) if model.gate else 1.0
    proba = softmax(sample.logits[rows], temperature)
    return rows, inputs, np.log(np.maximum(proba, 1e-12))


# -- the gate ----------------------------------------------------------------------------------
def _gate_for(
    model: Model,
    ext: Extension,
    sample: CalibrationSample,
    main: np.ndarray,
    inputs: Inputs,
    log_p: np.ndarray,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The gate holding every young class to its own evidence (`prodcat.gate.young`)."""
    if model.gate is None:
        return None, {}
    proba_examples = _leave_one_out(ext)
    proba_sample = _normalised(ext.merge_log(log_p, inputs))
    proba = np.vstack([proba_examples, proba_sample])
    y = np.concatenate([ext.example_class, sample.labels[main]])
    thresholds, counts = young_class_thresholds(model.gate, proba, y, ext.young_classes)
    named_only = set(ext.zero_shot_classes) - {int(c) for c in ext.example_class}
    for c in named_only:  # a category known by its name alone is never accepted
        thresholds[c] = ACCEPT_NOTHING
    examples = Counter(int(c) for c in ext.example_class)
    evidence = {
        ext.classes[c - ext.n_base]: {
            "examples": examples.get(c, 0),
            **counts[c],
            "accept_threshold": None if thresholds[c] >= ACCEPT_NOTHING else thresholds[c],
        }
        for c in ext.young_classes
    }
    return with_young_classes(model.gate, thresholds), evidence


def _leave_one_out(ext: Extension) -> np.ndarray:
    """The extended model's probabilities for its own examples, each left out of its class's
    prototype (names are not scored here: the examples' titles are not kept)."""
    m = len(ext.examples)
    if m == 0:
        return np.zeros((0, ext.n_base + len(ext.classes)))
    prototypes, owners = ext.prototypes()
    similarity = ext.examples @ prototypes.T
    column = {int(c): j for j, c in enumerate(owners)}
    sums = {int(c): ext.examples[ext.example_class == c].sum(axis=0) for c in owners}
    sizes = Counter(int(c) for c in ext.example_class)
    for i in range(m):
        c = int(ext.example_class[i])
        j = column[c]
        if sizes[c] < 2:
            similarity[i, j] = -np.inf
            continue
        rest = unit_rows((sums[c] - ext.examples[i])[None, :])[0]
        similarity[i, j] = float(ext.examples[i] @ rest)
    out = np.full((m, ext.n_base + len(ext.classes)), -np.inf)
    out[:, : ext.n_base] = ext.example_log_p
    mass = ext.prototype_mass(similarity, ext.examples, ext.example_log_p, owners)
    for j, c in enumerate(owners):
        out[:, c] = np.logaddexp(out[:, c], mass[:, j])
    return _normalised(out)


def _normalised(log_mass: np.ndarray) -> np.ndarray:
    top = log_mass.max(axis=1, keepdims=True)
    e = np.exp(log_mass - top)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def save_extended(model: Model, source: Path, out: Path) -> Path:
    """Save an extended model: a copy of its base folder `source` (the head is never changed,
    and a head loaded from its ONNX graph is copied, not re-exported) with the new gate, the
    extension and model.json's classes and taxonomy; returns `out`, its version set."""
    if out.resolve() != source.resolve():
        shutil.copytree(source, out, dirs_exist_ok=True)
    shutil.rmtree(out / EXTENSION_DIR, ignore_errors=True)
    if model.extension is not None:
        model.extension.save(out / EXTENSION_DIR)
    if model.gate is not None:
        model.gate.save(out / "gate")
    if model.reference is not None:
        model.reference.save(out / REFERENCE_FILE)
    config = json.loads((out / "model.json").read_text())
    config["classes"] = model.classes
    config["taxonomy"] = model.taxonomy.to_json()
    (out / "model.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    model.folder, model.version = out, model_version(out)
    return out
