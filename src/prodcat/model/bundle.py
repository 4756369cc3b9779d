"""The saved model: which encoders feed which head, the classes, and how it was trained.

A model directory holds `model.json` (classes, taxonomy, encoder names and versions, training
options, validation and test figures, a fingerprint of the training data, the prodcat version) and
`head/` (the head's own config.json + weights.safetensors) and `gate/` (calibration, thresholds
and the out-of-distribution reference, see `prodcat.gate.gate`); a model whose photo network was
fine-tuned on its catalogue also holds that network (`photo_encoder.onnx`), and a model trained
since the drift alarm holds its validation part's summary (`monitor.json`, see `prodcat.monitor`;
a model without one still loads, and `prodcat monitor` then says to retrain). No pickle anywhere.
Loading refuses a bundle whose encoders would no longer produce the features the head was trained
on. `model_version` (a hash over every file of the folder) names one bundle everywhere: the API,
the desk and the metrics.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prodcat import __version__
from prodcat.catalogue import Product
from prodcat.encoders.base import Encoder, ImageEncoder
from prodcat.encoders.registry import get_encoder, is_trunk, split_encoders
from prodcat.features.cache import FeatureCache
from prodcat.features.encode import Features, encode_products
from prodcat.gate.gate import Gate
from prodcat.heads import Head, Inputs
from prodcat.heads.inputs import restrict
from prodcat.heads.onnx_runtime import export_head_onnx, load_predict_head
from prodcat.model.prediction import TOP_K, Prediction
from prodcat.monitor.observations import Observations, photo_side
from prodcat.monitor.reference import REFERENCE_FILE, Reference
from prodcat.paths import tuned_scratch_dir
from prodcat.taxonomy.probabilities import back_off, level_probabilities
from prodcat.taxonomy.tree import Taxonomy, format_path, parse_path

MODEL_FORMAT = 1
ENCODER_FILE = "photo_encoder.onnx"  # a fine-tuned photo network inside the model folder
VERSION_CHARS = 12  # of the hex digest: short enough to read, long enough never to collide here


class ModelError(ValueError):
    """A model directory that cannot be used as it is; the message says what differs."""


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
    # The photo side (px, the longer side, median over the training photos) the model learnt
    # from: larger photos are brought down to it before the photo network, so a sharp photo gets
    # the answer its thumbnail gets (docs/resolution.md). None: a model from before the record,
    # which sees every photo at its own resolution, as it always did.
    photo_side: int | None = None

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.head.classes_]

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
            return self.head.predict_proba(inputs)
        return self.gate.calibrate(self.head.decision_logits(inputs), inputs)

    def calibrate(self, logits: np.ndarray, inputs: Inputs) -> np.ndarray:
        """`predict_proba` from the head's logits (computed once when the caller has them)."""
        if self.gate is None:
            from prodcat.gate.calibration import softmax

            return softmax(logits)
        return self.gate.calibrate(logits, inputs)

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
            photo_side=np.array([photo_side(p.image) for p in products], dtype=np.float64),
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
        files = self._save_encoder_files(folder)
        config = {
            "format": MODEL_FORMAT,
            "prodcat_version": __version__,
            "head": self.head_kind,
            "classes": self.classes,
            "taxonomy": self.taxonomy.to_json(),
            "encoders": {"image": self.image_encoder, "text": self.text_encoder},
            "encoder_versions": self.encoder_versions,
            "encoder_files": files,
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
        """Put the model's own photo network into `folder`; {name: file name there}. A file fresh
        from training (in the scratch folder) is moved, and the model then runs from the saved
        copy; any other file is copied."""
        if len(self.encoder_files) > 1:  # only the photo encoder is ever tuned
            raise ModelError(f"a model holds one tuned encoder, not {sorted(self.encoder_files)}")
        target = folder / ENCODER_FILE
        for name, path in self.encoder_files.items():
            if Path(path).resolve() == target.resolve():
                continue
            if Path(path).resolve().parent == tuned_scratch_dir().resolve():
                shutil.move(path, target)
                self.encoder_files[name] = target
            else:
                shutil.copyfile(path, target)
        return {name: ENCODER_FILE for name in self.encoder_files}

    @classmethod
    def load(cls, folder: str | Path, *, runtime: str = "onnx") -> Model:
        """Open a saved model; runtime "onnx" runs a torch head from its exported graph (no
        torch imported), "torch" reopens the head itself (to inspect or refit it)."""
        folder = Path(folder)
        config = _read_model_json(folder)
        files = {name: folder / file for name, file in config.get("encoder_files", {}).items()}
        _check_encoder_versions(config["encoder_versions"], folder, files)
        head = load_predict_head(folder / "head", runtime=runtime)
        if [str(c) for c in head.classes_] != config["classes"]:
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
            reference=_load_reference(folder),
            photo_side=_photo_side(config, folder),
        )


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
        with files[name].open("rb") as stream:
            content = hashlib.file_digest(stream, "sha256").digest()
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


def build_inputs(
    products: Sequence[Product], image: Features | None, text: Features | None
) -> tuple[Inputs, dict[str, str]]:
    """Align features to products; a product without a vector gets a zero row and mask False."""
    ids = [p.id for p in products]
    kwargs: dict[str, np.ndarray] = {}
    for name, feats in (("image", image), ("text", text)):
        if feats is None:
            continue
        mask, rows = feats.lookup(ids)
        matrix = np.zeros((len(ids), feats.vectors.shape[1]), dtype=np.float32)
        matrix[mask] = rows
        # A trunk encoder's output is the activations the fine-tune head runs its tail on.
        key = "image_activations" if is_trunk(feats.encoder) else name
        kwargs[key], kwargs[f"{name}_mask"] = matrix, mask
    if "image_activations" in kwargs and text is None:
        # The fine-tune head always has a text branch; a photo-only one gets an empty input.
        kwargs["text"] = np.zeros((len(ids), 0), dtype=np.float32)
        kwargs["text_mask"] = np.zeros(len(ids), dtype=bool)
    errors = {**(image.errors if image else {}), **(text.errors if text else {})}
    return Inputs(texts=[p.text for p in products], **kwargs), errors


def training_fingerprint(products: Sequence[Product]) -> str:
    """A hash of what the model learnt from: ids, labels, photo and title contents."""
    digest = hashlib.sha256()
    for p in sorted(products, key=lambda p: p.id):
        label = format_path(p.label) if p.label else ""
        digest.update(f"{p.id}\t{label}\t{p.image_sha256 or ''}\t{p.text}\n".encode())
    return digest.hexdigest()


def _photo_side(config: dict[str, Any], folder: Path) -> int | None:
    """model.json's photo side; None for a model saved before it was recorded."""
    side = config.get("photo_side")
    if side is None:
        return None
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ModelError(
            f"{folder}/model.json: photo_side is {side!r}; expected a positive whole number of "
            "pixels (or no photo_side at all)"
        )
    return side


def _load_reference(folder: Path) -> Reference | None:
    path = folder / REFERENCE_FILE
    if not path.exists():
        return None
    try:
        return Reference.load(path)
    except ValueError as exc:
        raise ModelError(f"{folder}: the drift reference cannot be read: {exc}") from None


def _read_model_json(folder: Path) -> dict[str, Any]:
    path = folder / "model.json"
    if not path.exists():
        raise ModelError(f"{folder} is not a prodcat model: it has no model.json")
    config: dict[str, Any] = json.loads(path.read_text())
    if config.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{path} has format {config.get('format')!r}; this prodcat reads format "
            f"{MODEL_FORMAT}: retrain with prodcat {__version__}"
        )
    return config


def _check_encoder_versions(saved: dict[str, str], folder: Path, files: dict[str, Path]) -> None:
    """Refuse a model whose encoders now compute different features than at training time."""
    differences = []
    for name, version in saved.items():
        try:
            options = {"onnx_file": files[name]} if name in files else {}
            installed = get_encoder(name, **options).version
        except ValueError as exc:
            differences.append(f"{name}: not available here ({exc})")
            continue
        if installed != version:
            differences.append(f"{name}: trained with {version!r}, installed {installed!r}")
    if differences:
        raise ModelError(
            f"{folder} was trained with encoders that differ from the installed ones:\n  "
            + "\n  ".join(differences)
            + "\nits head would receive features it has never seen; retrain the model here"
        )
