"""The saved model: which encoders feed which head, the classes, and how it was trained.

A model directory holds `model.json` (classes, taxonomy, encoder names and versions, training
options, validation and test figures, a fingerprint of the training data, the prodcat version) and
`head/` (the head's own config.json + weights.safetensors) and `gate/` (calibration, thresholds
and the out-of-distribution reference, see `prodcat.gate.gate`); a model whose photo network was
fine-tuned on its catalogue also holds that network (`photo_encoder.onnx`), and a model trained
since the drift alarm holds its validation part's summary (`monitor.json`, see `prodcat.monitor`;
a model without one still loads, and `prodcat monitor` then says to retrain). No pickle anywhere.
The neural encoders are inside too (`encoders/<name>/model.onnx`, MiniLM's tokenizer files beside
its export; sha256 of each in model.json's `encoder_file_sha256`): loading and predicting run from
the folder alone, without torch or the weight packages, so copying the folder is the deployment.
A folder saved before that still loads where the weight packages are installed (`prodcat[train]`),
which export the encoders as before; `prodcat pack MODEL` adds them to it.
Since round two it may also hold the training products' index for explanations (`neighbours/`),
classes added without retraining (`extension/`) with the validation sample they are calibrated on,
and the photo side the model learnt from (`photo_side`, larger photos are brought down to it).
Loading (checks in `folder_checks.py`) refuses a bundle whose encoders would no longer produce the
features the head was trained on. `model_version` (a hash over every file of the folder) names one
bundle everywhere: the API, the desk and the metrics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np

from prodcat import __version__
from prodcat.catalogue import Product
from prodcat.encoders.base import Encoder, ImageEncoder, file_sha256
from prodcat.encoders.registry import get_encoder, split_encoders
from prodcat.features.cache import FeatureCache
from prodcat.features.encode import Features, encode_products
from prodcat.gate.gate import Gate
from prodcat.heads import Head, Inputs
from prodcat.heads.inputs import restrict
from prodcat.heads.onnx_runtime import export_head_onnx, load_predict_head
from prodcat.model.encoder_files import ENCODER_FILE as ENCODER_FILE  # re-exported: a public name
from prodcat.model.encoder_files import (
    EncoderFilesError,
    check_encoder_files,
    file_hashes,
    save_encoder_files,
)
from prodcat.model.extension import (
    EXTENSION_DIR,
    SAMPLE_FILE,
    Extension,
    load_extension,
    load_sample,
)
from prodcat.model.folder_checks import (
    MODEL_FORMAT,
    ModelError,
    check_encoder_versions,
    load_reference,
    read_model_json,
    read_photo_side,
)
from prodcat.model.inputs import build_inputs
from prodcat.model.neighbours import NeighbourIndex
from prodcat.model.prediction import TOP_K, Prediction
from prodcat.monitor.observations import Observations
from prodcat.monitor.observations import photo_side as photo_side_of  # not the field
from prodcat.monitor.reference import REFERENCE_FILE, Reference
from prodcat.taxonomy.probabilities import back_off, level_probabilities
from prodcat.taxonomy.tree import Taxonomy, parse_path

T = TypeVar("T")
VERSION_CHARS = 12  # of the hex digest: short enough to read, long enough never to collide here


class _FromFolder(Generic[T]):
    """A part of a saved model read from its folder on first use (or set like an attribute)."""

    def __init__(self, load: Callable[[Path], T | None]) -> None:
        self.load = load

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    @overload
    def __get__(self, model: None, owner: type) -> _FromFolder[T]: ...
    @overload
    def __get__(self, model: Model, owner: type) -> T | None: ...
    def __get__(self, model: Model | None, owner: type) -> _FromFolder[T] | T | None:
        if model is None:
            return self
        if self.slot not in model.__dict__:
            folder = model.folder
            model.__dict__[self.slot] = self.load(folder) if folder is not None else None
        value: T | None = model.__dict__[self.slot]
        return value

    def __set__(self, model: Model, value: T | None) -> None:
        model.__dict__[self.slot] = value


@dataclass
class Model:
    """A trained head plus everything needed to feed it and to trust it."""

    head: Head
    image_encoder: str | None
    text_encoder: str | None
    encoder_versions: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    gate: Gate | None = None
    # Encoders that run from a file of this model (a photo network fine-tuned on the catalogue,
    # `prodcat train --fine-tune-whole`): encoder name -> its ONNX file.
    encoder_files: dict[str, Path] = field(default_factory=dict)
    # The folder it was loaded from or last saved to, and that folder's `model_version`; None and
    # "" for a model never saved.
    folder: Path | None = None
    version: str = ""
    # The validation part's summary the drift alarm compares batches with (None: trained before
    # the alarm existed).
    reference: Reference | None = None
    # Classes added without retraining (`prodcat extend`, `prodcat.model.extension`; None: none).
    extension: Extension | None = None
    # The photo side (px, the longer side, median over the training photos) the model learnt
    # from: larger photos are brought down to it before the photo network, so a sharp photo gets
    # the answer its thumbnail gets (docs/resolution.md). None: a model from before the record,
    # which sees every photo at its own resolution, as it always did.
    photo_side: int | None = None

    # Read from `folder` when first asked for, so that loading to predict or serve does not pay
    # for them (0.2 s and tens of MB on FULL); None where the model has none.
    # The training products' embeddings the explanations show the nearest of
    # (`prodcat.model.neighbours`; None: trained before explanations existed).
    neighbours = _FromFolder(NeighbourIndex.load)
    # The validation sample an extension is calibrated on (None: trained before `extend`).
    extension_sample = _FromFolder(load_sample)

    @property
    def classes(self) -> list[str]:
        base = [str(c) for c in self.head.classes_]
        return base + self.extension.classes if self.extension is not None else base

    @property
    def head_kind(self) -> str:
        """The head's name ("fusion"...), also when it runs from its ONNX graph."""
        return str(getattr(self.head, "kind_", self.head.name))

    @property
    def taxonomy(self) -> Taxonomy:
        return Taxonomy.from_paths(parse_path(c) for c in self.classes)

    # -- features -------------------------------------------------------------------------
    def encode(
        self, products: Sequence[Product], cache: FeatureCache, *, progress: bool = True
    ) -> tuple[Inputs, dict[str, str]]:
        """The head's inputs for `products` and {product id: why a modality is missing}."""
        image = self._features(self.image_encoder, products, cache, progress)
        text = self._features(self.text_encoder, products, cache, progress)
        return build_inputs(products, image, text)

    def _features(
        self, name: str | None, products: Sequence[Product], cache: FeatureCache, progress: bool
    ) -> Features | None:
        if name is None:
            return None
        parts = [
            encode_products(products, self.get_encoder(part), cache, progress=progress)
            for part in split_encoders(name)
        ]
        return parts[0] if len(parts) == 1 else Features.concatenate(parts)

    def get_encoder(self, name: str, **options: Any) -> Encoder:
        """The registered encoder `name`, handed its file when this model holds one."""
        if name in self.encoder_files:
            options = {"onnx_file": self.encoder_files[name], **options}
        encoder = get_encoder(name, **options)
        if isinstance(encoder, ImageEncoder) and self.photo_side is not None:
            encoder.fit_side = self.photo_side
        return encoder

    # -- prediction -----------------------------------------------------------------------
    def predict(
        self,
        products: Sequence[Product],
        cache: FeatureCache | None = None,
        *,
        min_confidence: float | None = None,
        progress: bool = False,
        threshold: float | None = None,
        modalities: Collection[str] | None = None,
    ) -> list[Prediction]:
        """One answer per product, in order: the Python API behind `prodcat predict`.

        `threshold` overrides the accept threshold chosen at training; `modalities` ("image",
        "text") hides the others from the model, as if the products lacked them. Without `cache`,
        photos and titles are encoded in memory (`prodcat.model.predictor`, the path
        `prodcat predict` and the REST API take); with one, features go through the feature cache.
        """
        if cache is None:
            from prodcat.model.predictor import Predictor

            return Predictor(self).predict_products(
                products, min_confidence=min_confidence, threshold=threshold, modalities=modalities
            )
        inputs, errors = self.encode(products, cache, progress=progress)
        inputs = restrict(inputs, modalities)
        logits = self.head.decision_logits(inputs)
        return self.predictions(
            [p.id for p in products],
            self.calibrate(logits, inputs),
            min_confidence=min_confidence,
            errors=errors,
            inputs=inputs,
            threshold=threshold,
            logits=logits,
        )

    @property
    def accept_threshold(self) -> float:
        """Calibrated probability at or above which a photo + title answer is accepted (the
        gate has one per modality case, see `Gate.accept_thresholds`)."""
        if self.gate is not None:
            return self.gate.accept_thresholds[self.gate.main_case]
        return float(self.options.get("accept_threshold", 0.9))

    def predict_proba(self, inputs: Inputs) -> np.ndarray:
        """Calibrated probabilities (each modality case's temperature) once the gate is fitted."""
        if self.gate is None:
            return self._extended(self.head.predict_proba(inputs), inputs)
        return self.calibrate(self.head.decision_logits(inputs), inputs)

    def calibrate(self, logits: np.ndarray, inputs: Inputs) -> np.ndarray:
        """`predict_proba` from the head's logits (computed once when the caller has them)."""
        if self.gate is None:
            from prodcat.gate.calibration import softmax

            return self._extended(softmax(logits), inputs)
        return self._extended(self.gate.calibrate(logits, inputs), inputs)

    def _extended(self, proba: np.ndarray, inputs: Inputs) -> np.ndarray:
        """The head's probabilities with an extension's classes merged in (as they are without)."""
        return proba if self.extension is None else self.extension.merge(proba, inputs)

    def predictions(
        self,
        ids: Sequence[str],
        proba: np.ndarray,
        *,
        min_confidence: float | None = None,
        errors: dict[str, str] | None = None,
        inputs: Inputs | None = None,
        threshold: float | None = None,
        logits: np.ndarray | None = None,
    ) -> list[Prediction]:
        """Turn (calibrated) probabilities into answers with a decision and an OOD score.

        `min_confidence` backs off to a confident ancestor; `threshold` overrides the accept
        threshold. Without `inputs` there is no OOD score and every case uses `accept_threshold`.
        `logits` (the head's, for `inputs`) spare a second pass through the head.
        """
        classes = self.classes
        levels = level_probabilities(proba, classes)
        chosen = back_off(proba, classes, min_confidence) if min_confidence else None
        top_idx = np.argsort(-proba, axis=1)[:, :TOP_K]
        decisions, ood = self._decisions(proba, inputs, threshold, logits)
        # What the answer was made from: of what a product has, what the model uses.
        shown = (
            [[] if c == "none" else c.split("+") for c in self.gate.cases(inputs)]
            if self.gate is not None and inputs is not None
            else None
        )
        out = []
        for i, pid in enumerate(ids):
            top = [(classes[j], float(proba[i, j])) for j in top_idx[i]]
            category, probability = chosen[i] if chosen else top[0]
            out.append(
                Prediction(
                    id=pid,
                    category=category,
                    probability=float(probability),
                    level_probabilities=[float(p) for p in levels[i].values()],
                    top=top,
                    decision=decisions[i],
                    ood_score=None if not np.isfinite(ood[i]) else float(ood[i]),
                    modalities=shown[i] if shown else _modalities(inputs, i),
                    error=(errors or {}).get(pid),
                )
            )
        return out

    def _decisions(
        self,
        proba: np.ndarray,
        inputs: Inputs | None,
        threshold: float | None,
        logits: np.ndarray | None,
    ) -> tuple[list[str], np.ndarray]:
        """(decision per product, OOD score per product, NaN where there is none)."""
        if self.gate is None or inputs is None:
            limit = self.accept_threshold if threshold is None else threshold
            decisions = ["accept" if p >= limit else "review" for p in proba.max(axis=1)]
            return decisions, np.full(len(proba), np.nan)
        if logits is None:
            logits = self.head.decision_logits(inputs)
        if self.extension is not None:  # the examples of added classes count as known products
            logits = self.extension.ood_logits(logits, inputs)
        ood = self.gate.ood_scores(inputs, logits)
        cases = self.gate.cases(inputs)
        return self.gate.decide(proba, ood, cases, threshold=threshold), ood

    def observe(self, products: Sequence[Product], inputs: Inputs) -> Observations:
        """What the drift alarm looks at for `products` (their encoded `inputs`): decisions,
        confidences, OOD scores, predicted classes, which modalities came, photo sizes."""
        logits = self.head.decision_logits(inputs)
        proba = self.calibrate(logits, inputs)
        decisions, ood = self._decisions(proba, inputs, None, logits)
        return Observations(
            decisions=np.array(decisions, dtype=object),
            confidence=proba.max(axis=1),
            ood_score=ood,
            predicted=proba.argmax(axis=1),
            has_photo=np.array([p.image is not None for p in products], dtype=bool),
            has_title=np.array([bool(p.text) for p in products], dtype=bool),
            photo_side=np.array([photo_side_of(p.image) for p in products], dtype=np.float64),
        )

    # -- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.head.save(folder / "head")
        export_head_onnx(self.head, folder / "head")  # torch heads: served by ONNX Runtime
        if self.gate is not None:
            self.gate.save(folder / "gate")
        if self.reference is not None:
            self.reference.save(folder / REFERENCE_FILE)
        if self.neighbours is not None:
            self.neighbours.save(folder)
        files = self._save_encoder_files(folder)
        self._save_extension_parts(folder)
        config = {
            "format": MODEL_FORMAT,
            "prodcat_version": __version__,
            "head": self.head_kind,
            "classes": self.classes,
            "taxonomy": self.taxonomy.to_json(),
            "encoders": {"image": self.image_encoder, "text": self.text_encoder},
            "encoder_versions": self.encoder_versions,
            "encoder_files": files,
            "encoder_file_sha256": file_hashes(folder, files),
            "options": self.options,
            "figures": self.figures,
            "training_data_fingerprint": self.fingerprint,
        }
        if self.photo_side is not None:  # absent, not null: older prodcat reads the file as before
            config["photo_side"] = self.photo_side
        (folder / "model.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        self.folder, self.version = folder, model_version(folder)
        return folder

    def _save_encoder_files(self, folder: Path) -> dict[str, str]:
        """Put the files the model's encoders run from into `folder` (`encoder_files`)."""
        try:
            return save_encoder_files(
                folder, self.encoder_files, self._encoder_names(), self.get_encoder
            )
        except EncoderFilesError as exc:
            raise ModelError(str(exc)) from None

    def _encoder_names(self) -> list[str]:
        """Every encoder feeding the head, a text input made of several counted one by one."""
        names = [n for n in (self.image_encoder, self.text_encoder) if n]
        return [part for name in names for part in split_encoders(name)]

    def _save_extension_parts(self, folder: Path) -> None:
        """The extension and the calibration sample, where the model has them."""
        if self.extension is not None:
            self.extension.save(folder / EXTENSION_DIR)
        if self.extension_sample is not None:
            self.extension_sample.save(folder / SAMPLE_FILE)

    @classmethod
    def load(cls, folder: str | Path, *, runtime: str = "onnx") -> Model:
        """Open a saved model; runtime "onnx" runs a torch head from its exported graph (no
        torch imported), "torch" reopens the head itself (to inspect or refit it)."""
        folder = Path(folder)
        config = read_model_json(folder)
        files = {name: folder / file for name, file in config.get("encoder_files", {}).items()}
        try:
            check_encoder_files(
                folder, config.get("encoder_file_sha256", {}), config.get("encoder_files", {})
            )
        except EncoderFilesError as exc:
            raise ModelError(str(exc)) from None
        check_encoder_versions(config["encoder_versions"], folder, files)
        head = load_predict_head(folder / "head", runtime=runtime)
        extension = load_extension(folder)
        if [str(c) for c in head.classes_] + (extension.classes if extension else []) != config[
            "classes"
        ]:
            raise ModelError(
                f"{folder}: the head's classes differ from model.json's "
                f"({len(head.classes_)} vs {len(config['classes'])}); the bundle was edited or "
                "mixed from two models: retrain it"
            )
        return cls(
            head=head,
            image_encoder=config["encoders"]["image"],
            text_encoder=config["encoders"]["text"],
            encoder_versions=config["encoder_versions"],
            options=config.get("options", {}),
            figures=config.get("figures", {}),
            fingerprint=config.get("training_data_fingerprint", ""),
            gate=Gate.load(folder / "gate") if (folder / "gate" / "gate.json").exists() else None,
            encoder_files=files,
            folder=folder,
            version=model_version(folder),
            reference=load_reference(folder),
            extension=extension,
            photo_side=read_photo_side(config, folder),
        )


def pack_encoders(folder: str | Path) -> list[str]:
    """Add to a model folder saved before folders kept their encoders the files those encoders
    run from, and list them in its model.json; the head, gate and figures stay as they are.

    Needs the weight packages (`prodcat[train]`) to export the encoders. Returns the encoders
    added ([] when the folder holds them all already); its `model_version` changes.
    """
    folder = Path(folder)
    model = Model.load(folder)
    config = read_model_json(folder)
    before = set(config.get("encoder_files", {}))
    files = model._save_encoder_files(folder)
    config["encoder_files"] = files
    config["encoder_file_sha256"] = file_hashes(folder, files)
    tmp = folder / ".model.json.tmp"
    tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    tmp.replace(folder / "model.json")
    return sorted(set(files) - before)


def model_version(folder: str | Path) -> str:
    """A short hash over every file of a model folder (model.json, head, gate, a tuned photo
    network, anything else there): one bundle, one version, and any changed byte changes it.

    Each file enters with its path inside the folder, so a renamed or moved file counts too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a model directory: nothing to compute a version from")
    digest = hashlib.sha256()
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    for name in sorted(files):
        # file_sha256 is memoised per file: the encoders' checks on load hash them once.
        content = bytes.fromhex(file_sha256(files[name]))
        digest.update(name.encode() + b"\0" + content)
    return digest.hexdigest()[:VERSION_CHARS]


def _modalities(inputs: Inputs | None, i: int) -> list[str]:
    if inputs is None:
        return []
    names = []
    if inputs.image_mask is not None and inputs.image_mask[i]:
        names.append("image")
    if inputs.text_mask is not None and inputs.text_mask[i]:
        names.append("text")
    return names
