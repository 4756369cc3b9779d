"""New categories without retraining: a prototype layer beside the head (`prodcat extend`).

A saved model knows its classes through its head. An *extension* adds classes (and strengthens
known ones) from a handful of labelled examples, without touching the head:

- **The space.** A product is a unit vector made of its centred photo embedding and its centred
  title embedding (the model's own frozen encoders), each L2-normalised and weighted so that the
  cosine of two products is ``w * cos(photos) + (1 - w) * cos(titles)``; a product missing one
  modality is compared on the other alone. `w` = `PHOTO_WEIGHT` (docs/extend.md: chosen on the
  validation part of FULL).
- **Prototypes.** Each class with examples has one prototype: the normalised mean of its examples.
  A product's similarity ``s`` to it, its margin ``m`` over the head's classes (``s`` minus the
  best similarity to another class's *anchor*, the mean of its validation products) and the
  head's own confidence ``q`` (its top log-probability: an old product the head is sure of needs
  a closer match to move) become a log-mass ``a * s + a_m * m + a_q * q + b + b_c`` next to the
  head's calibrated log-probabilities (which sum to one): a new class gets that mass alone, a
  known class with examples ``log(p_head + exp(mass))``. Then everything is renormalised, so a
  new leaf under an existing parent adds to that parent's probability like any other leaf.
- **Calibration.** ``(a, a_m, a_q, b)`` are fitted on held-out data against the existing
  classes: the model folder keeps a sample of its validation part (`CalibrationSample`: photo
  and title embeddings, the head's logits, the true class; `SAMPLE_FILE`, written by
  `prodcat train`). Known classes of the sample play new ones: each drops out of the head's
  output, gets a prototype from `shots` of its sample products, and the coefficients minimise
  the log-loss of the merged output over the rest. ``b`` is then moved to the operating point
  chosen on FULL (`extension_fit.BIAS_SHIFT`), and each class's own ``b_c`` <= 0 caps the
  sample's old products it would take (`extension_fit.cap_flips`; docs/extend.md: the
  trade-off).
- **Zero-shot.** A category with no example at all (only its name) gets a log-mass
  ``a0 * cos(title, name) + a0_q * q + b0`` from the MiniLM title embedding, the embedding of its
  leaf name and the head's confidence, calibrated the same way with the known classes' own
  names. The gate never accepts it.

Saved as ``extension/extension.json`` + ``extension/arrays.safetensors`` (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from prodcat.encoders.base import unit_rows
from prodcat.heads import Inputs

EXTENSION_DIR = "extension"
SAMPLE_FILE = "extension_sample.safetensors"
EXTENSION_FORMAT = 1
# The photo's share of the similarity (see the module docstring and docs/extend.md).
PHOTO_WEIGHT = 0.5
# At most this many validation products are kept in a model folder for calibrating extensions.
SAMPLE_ROWS = 3000
# Known classes that play a new class while (a, b) are fitted; each needs shots + this many more.
SIMULATED_CLASSES = 60
EVAL_ROWS_MIN = 2
_FLOOR = 1e-12


class ExtendError(ValueError):
    """Examples or categories `prodcat extend` cannot use; the message says which and why."""


@dataclass
class Space:
    """Where prototypes live: centred, normalised photo and title embeddings, weighted."""

    image_mean: np.ndarray | None  # (di,) or None: the model reads no photo
    text_mean: np.ndarray | None  # (dt,)
    photo_weight: float = PHOTO_WEIGHT

    def embed(
        self,
        image: np.ndarray | None,
        image_mask: np.ndarray,
        text: np.ndarray | None,
        text_mask: np.ndarray,
    ) -> np.ndarray:
        """(n, di + dt) rows: unit length where a product has anything, zero where it has none."""
        n = len(image_mask)
        parts = []
        weights = []
        for values, mean, mask, weight in (
            (image, self.image_mean, image_mask, self.photo_weight),
            (text, self.text_mean, text_mask, 1.0 - self.photo_weight),
        ):
            if mean is None or values is None:
                continue
            part = unit_rows(values - mean) * np.asarray(mask, dtype=np.float32)[:, None]
            parts.append(part * np.sqrt(weight))
            weights.append(np.asarray(mask, dtype=np.float32) * weight)
        if not parts:
            return np.zeros((n, 0), dtype=np.float32)
        # Rescale so a product with one modality is compared on it alone (unit length again).
        total = np.sum(weights, axis=0)
        scale = np.where(total > 0, 1.0 / np.sqrt(np.maximum(total, 1e-12)), 0.0)
        out: np.ndarray = np.hstack(parts) * scale[:, None].astype(np.float32)
        return out

    def embed_inputs(self, inputs: Inputs) -> np.ndarray:
        return self.embed(inputs.image, inputs.has_image, inputs.text, inputs.has_text)


@dataclass
class CalibrationSample:
    """Validation products kept in the model folder to calibrate extensions against the head."""

    image: np.ndarray | None  # (n, di) photo embeddings, zero rows where none
    text: np.ndarray | None  # (n, dt) title embeddings
    image_mask: np.ndarray  # (n,) bool
    text_mask: np.ndarray  # (n,) bool
    logits: np.ndarray  # (n, K) the head's logits for them
    labels: np.ndarray  # (n,) the head's class index of each

    @classmethod
    def build(
        cls,
        inputs: Inputs,
        logits: np.ndarray,
        labels: np.ndarray,
        *,
        max_rows: int = SAMPLE_ROWS,
        seed: int = 0,
    ) -> CalibrationSample:
        """Keep at most `max_rows` in-class products (labels >= 0), drawn at random."""
        rows = np.flatnonzero(np.asarray(labels) >= 0)
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
        return cls(
            image=None if inputs.image is None else inputs.image[rows],
            text=None if inputs.text is None else inputs.text[rows],
            image_mask=inputs.has_image[rows],
            text_mask=inputs.has_text[rows],
            logits=np.asarray(logits, dtype=np.float32)[rows],
            labels=np.asarray(labels, dtype=np.int64)[rows],
        )

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "image_mask": self.image_mask.astype(np.uint8),
            "text_mask": self.text_mask.astype(np.uint8),
            "logits": self.logits.astype(np.float32),
            "labels": self.labels.astype(np.int64),
        }
        for name in ("image", "text"):
            values = getattr(self, name)
            if values is not None:  # float16: a few MB for 3,000 products, same prototypes
                arrays[name] = values.astype(np.float16)
        safetensors.numpy.save_file(arrays, str(path))

    @classmethod
    def load(cls, path: Path) -> CalibrationSample:
        arrays = safetensors.numpy.load_file(str(path))
        return cls(
            image=arrays["image"].astype(np.float32) if "image" in arrays else None,
            text=arrays["text"].astype(np.float32) if "text" in arrays else None,
            image_mask=arrays["image_mask"].astype(bool),
            text_mask=arrays["text_mask"].astype(bool),
            logits=arrays["logits"],
            labels=arrays["labels"],
        )


@dataclass
class Extension:
    """Classes added to a model without retraining its head; see the module docstring."""

    n_base: int  # the head's classes come first, in its order
    classes: list[str]  # the added classes, in the order they follow the head's
    space: Space
    examples: np.ndarray  # (m, d) embedded examples
    example_class: np.ndarray  # (m,) index into the extended class list
    scale: float = 10.0
    bias: float = -5.0
    # Zero-shot categories: the embedding of each one's name in the title encoder's space.
    names: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    name_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    name_scale: float = 10.0
    name_bias: float = -5.0
    # Anchors: the head's classes as seen in the validation sample (the normalised mean of each
    # one's products) and their names' embeddings. A score also weighs its *margin*: the
    # similarity to the added class minus the best similarity to an anchor of another class, so
    # a T-shirt close to a new "Shirts" prototype but closer still to the T-shirts stays one.
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    anchor_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    margin_scale: float = 0.0
    # The head's own confidence (its top log-probability) weighs in too: an old product the
    # head is sure of needs a closer match to move (docs/extend.md: the trade-off).
    confidence_scale: float = 0.0
    # (n_base + added,) a log-mass offset per class (<= 0): each class's own cap on the old
    # products of the validation sample it pulls in (`extension_fit.cap_flips`); empty: none.
    class_bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    name_anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    name_margin_scale: float = 0.0
    name_confidence_scale: float = 0.0  # the head's confidence in a name's log-mass, as above
    text_slice: tuple[int, int] | None = None  # where the MiniLM part sits in the text features
    # (m, K) the head's calibrated log-probabilities of each example (the young classes' evidence
    # is recounted from them when a model is extended again).
    example_log_p: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    info: dict[str, Any] = field(default_factory=dict)  # counts, the calibration, the evidence

    # -- what is added -----------------------------------------------------------------------
    @property
    def zero_shot_classes(self) -> list[int]:
        return sorted({int(c) for c in self.name_class})

    @property
    def young_classes(self) -> list[int]:
        """The added classes (every one is young: its own evidence decides; docs/extend.md)."""
        return list(range(self.n_base, self.n_base + len(self.classes)))

    def prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        """(P, d) unit prototypes and (P,) their class indices, one per class with examples."""
        owners = np.unique(self.example_class)
        rows = [self.examples[self.example_class == c].mean(axis=0) for c in owners]
        if not rows:
            return np.zeros((0, self.examples.shape[1]), np.float32), owners
        return unit_rows(np.vstack(rows)), owners

    # -- applying ----------------------------------------------------------------------------
    def merge(self, proba: np.ndarray, inputs: Inputs) -> np.ndarray:
        """The head's (n, K) probabilities -> (n, K + added) with the prototypes' mass merged."""
        log_p = np.log(np.maximum(np.asarray(proba, dtype=np.float64), _FLOOR))
        return _softmax(self.merge_log(log_p, inputs))

    def merge_log(self, log_p: np.ndarray, inputs: Inputs) -> np.ndarray:
        """Unnormalised merged log-masses from the head's log-probabilities."""
        n = len(log_p)
        out = np.full((n, self.n_base + len(self.classes)), -np.inf)
        out[:, : self.n_base] = log_p
        prototypes, owners = self.prototypes()
        if len(owners):
            embedded = self.space.embed_inputs(inputs)
            has_any = np.linalg.norm(embedded, axis=1) > 0
            mass = self.prototype_mass(embedded @ prototypes.T, embedded, log_p, owners)
            mass[~has_any] = -np.inf
            for j, c in enumerate(owners):
                out[:, c] = np.logaddexp(out[:, c], mass[:, j])
        if len(self.name_class) and self.text_slice is not None and inputs.text is not None:
            titles = unit_rows(inputs.text[:, slice(*self.text_slice)])
            similarity = titles @ self.names.T
            base = np.arange(len(self.name_anchors))
            rival = rival_similarity(titles @ self.name_anchors.T, base, self.name_class)
            margin = similarity - rival
            mass = self.name_scale * similarity + self.name_margin_scale * margin + self.name_bias
            mass = mass + self.name_confidence_scale * log_p.max(axis=1, keepdims=True)
            mass[~inputs.has_text] = -np.inf
            for j, c in enumerate(self.name_class):
                out[:, c] = np.logaddexp(out[:, c], mass[:, j])
        return out

    def prototype_mass(
        self, similarity: np.ndarray, embedded: np.ndarray, log_p: np.ndarray, owners: np.ndarray
    ) -> np.ndarray:
        """(n, P) log-masses from each product's similarity to each prototype, its margin over
        the other classes' anchors and the head's confidence (`log_p`: the head's
        log-probabilities of the same products)."""
        rival = rival_similarity(embedded @ self.anchors.T, self.anchor_class, owners)
        features = prototype_features(similarity, rival, log_p.max(axis=1))
        mass: np.ndarray = features @ self.weights() + self.bias
        if len(self.class_bias):
            mass = mass + self.class_bias[owners][None, :]
        return mass

    def weights(self) -> np.ndarray:
        """The coefficients of `prototype_features`, in its order."""
        return np.array([self.scale, self.margin_scale, self.confidence_scale])

    def ood_logits(self, logits: np.ndarray, inputs: Inputs) -> np.ndarray:
        """The head's raw logits with the added classes merged (log-masses at temperature 1), so
        the OOD score's max-softmax sees a product close to a new class's examples as known."""
        log_p = np.log(np.maximum(_softmax(np.asarray(logits, dtype=np.float64)), _FLOOR))
        return self.merge_log(log_p, inputs)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": EXTENSION_FORMAT,
            "n_base": self.n_base,
            "classes": self.classes,
            "photo_weight": self.space.photo_weight,
            "scale": self.scale,
            "bias": self.bias,
            "name_scale": self.name_scale,
            "name_bias": self.name_bias,
            "margin_scale": self.margin_scale,
            "confidence_scale": self.confidence_scale,
            "name_margin_scale": self.name_margin_scale,
            "name_confidence_scale": self.name_confidence_scale,
            "text_slice": list(self.text_slice) if self.text_slice else None,
            "info": self.info,
        }
        (folder / "extension.json").write_text(json.dumps(config, indent=1, ensure_ascii=False))
        arrays: dict[str, np.ndarray] = {
            "examples": self.examples.astype(np.float16),
            "example_class": self.example_class.astype(np.int64),
            "names": self.names.astype(np.float32),
            "name_class": self.name_class.astype(np.int64),
            "example_log_p": self.example_log_p.astype(np.float32),
            "anchors": self.anchors.astype(np.float16),
            "anchor_class": self.anchor_class.astype(np.int64),
            "name_anchors": self.name_anchors.astype(np.float16),
            "class_bias": np.asarray(self.class_bias, dtype=np.float32),
        }
        for name in ("image_mean", "text_mean"):
            value = getattr(self.space, name)
            if value is not None:
                arrays[name] = value.astype(np.float32)
        safetensors.numpy.save_file(arrays, str(folder / "arrays.safetensors"))

    @classmethod
    def load(cls, folder: Path) -> Extension:
        config = json.loads((folder / "extension.json").read_text())
        if config.get("format") != EXTENSION_FORMAT:
            raise ValueError(
                f"{folder / 'extension.json'} has format {config.get('format')!r}; expected "
                f"{EXTENSION_FORMAT}: extend the base model again"
            )
        arrays = safetensors.numpy.load_file(str(folder / "arrays.safetensors"))
        space = Space(arrays.get("image_mean"), arrays.get("text_mean"), config["photo_weight"])
        text_slice = config.get("text_slice")
        return cls(
            n_base=int(config["n_base"]),
            classes=list(config["classes"]),
            space=space,
            examples=arrays["examples"].astype(np.float32),
            example_class=arrays["example_class"],
            scale=float(config["scale"]),
            bias=float(config["bias"]),
            names=arrays["names"],
            name_class=arrays["name_class"],
            name_scale=float(config["name_scale"]),
            name_bias=float(config["name_bias"]),
            text_slice=(int(text_slice[0]), int(text_slice[1])) if text_slice else None,
            example_log_p=arrays["example_log_p"],
            anchors=arrays["anchors"].astype(np.float32),
            anchor_class=arrays["anchor_class"],
            margin_scale=float(config["margin_scale"]),
            # absent in an extension saved before the confidence counted: 0, as it was fitted
            confidence_scale=float(config.get("confidence_scale", 0.0)),
            class_bias=arrays.get("class_bias", np.zeros(0, np.float32)).astype(np.float64),
            name_anchors=arrays["name_anchors"].astype(np.float32),
            name_margin_scale=float(config["name_margin_scale"]),
            name_confidence_scale=float(config.get("name_confidence_scale", 0.0)),
            info=config.get("info", {}),
        )


def prototype_features(
    similarity: np.ndarray, rival: np.ndarray, confidence: np.ndarray
) -> np.ndarray:
    """(n, P, 3): the similarity to each prototype, its margin over the best anchor of another
    class (`rival`), the head's top log-probability (`confidence`, (n,): one per product)."""
    return np.stack(
        [similarity, similarity - rival, np.broadcast_to(confidence[:, None], similarity.shape)],
        axis=-1,
    )


def rival_similarity(
    anchor_similarity: np.ndarray, anchor_class: np.ndarray, owners: np.ndarray
) -> np.ndarray:
    """(n, P): per product and owner class, the best similarity to an anchor of another class
    (0 without anchors)."""
    n, a = anchor_similarity.shape
    if a == 0:
        return np.zeros((n, len(owners)))
    order = np.argsort(-anchor_similarity, axis=1)[:, :2]
    best = np.take_along_axis(anchor_similarity, order[:, :1], axis=1)[:, 0]
    second = (
        np.take_along_axis(anchor_similarity, order[:, 1:2], axis=1)[:, 0] if a > 1 else best * 0
    )
    best_class = np.asarray(anchor_class)[order[:, 0]]
    out: np.ndarray = np.stack(
        [np.where(best_class == c, second, best) for c in owners], axis=1
    ).astype(np.float64)
    return out


def load_extension(folder: Path) -> Extension | None:
    """The extension saved in a model folder, None for a model that has none."""
    path = folder / EXTENSION_DIR
    return Extension.load(path) if (path / "extension.json").exists() else None


def load_sample(folder: Path) -> CalibrationSample | None:
    path = folder / SAMPLE_FILE
    return CalibrationSample.load(path) if path.exists() else None


def _softmax(z: np.ndarray) -> np.ndarray:
    top = np.max(z, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(z - top)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def leaf_names(paths: Sequence[str]) -> list[str]:
    """The text a category is known by for zero-shot scoring: its leaf ("Flats")."""
    return [p.split(">")[-1].strip() for p in paths]
