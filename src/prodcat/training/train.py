"""Training in phases: select classes, split, encode through the cache, fit, measure, save.

`TrainOptions` holds every choice in one typed, validated place; `train` sequences the phases and
returns what the CLI prints and the report shows. Figures on the validation part choose the
hyperparameters; the test part is only ever measured.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from prodcat.catalogue import Catalogue, Product
from prodcat.catalogue.classes import choose_classes
from prodcat.catalogue.images import median_photo_side
from prodcat.catalogue.split import split_catalogue
from prodcat.encoders.image import check_size
from prodcat.encoders.registry import encoder_name, fits_words, parse_encoder_name, split_encoders
from prodcat.features.cache import FeatureCache
from prodcat.gate.certificate import CaseData
from prodcat.gate.gate import DEFAULT_TARGET_ACCURACY, class_indices, fit_gate
from prodcat.heads import HEAD_NAMES, Head, Inputs, head_class
from prodcat.heads.inputs import join_inputs
from prodcat.model.bundle import Model
from prodcat.model.extension import CalibrationSample
from prodcat.model.inputs import training_fingerprint
from prodcat.model.neighbours import NeighbourIndex
from prodcat.monitor.reference import Reference
from prodcat.progress import training_progress
from prodcat.taxonomy.tree import format_path
from prodcat.training.crossfit import DEFAULT_FOLDS, cross_fitted_logits
from prodcat.training.metrics import evaluate_products
from prodcat.training.whole_network import TunedPhotoNetwork


@dataclass(frozen=True)
class TrainOptions:
    # The head to train, by its registered name (`prodcat.heads.HEAD_NAMES`): "fusion-blend"
    # (photo + title), "fusion", "text-linear" (title only), "image" (photo only).
    model: str = "fusion-blend"
    image_encoder: str = "effnet-lite0"
    # The photo network's input size in pixels; None: the encoder's native size (224 for
    # Lite0). Thumbnails lose little below it and encode 2-3x faster (see docs/training.md).
    image_size: int | None = None
    text_encoder: str | None = None  # default: the head's (minilm, or tfidf for text-linear)
    top_classes: int | None = None
    min_class_count: int | None = None
    seed: int = 0
    # Train the last EfficientNet-Lite blocks too (on cached activations; fusion or image).
    fine_tune: bool = False
    # Fine-tune every layer of the photo network first and use it as the photo encoder
    # (`prodcat.training.whole_network`; the best of `fine_tune_epochs` epochs by validation).
    fine_tune_whole: bool = False
    fine_tune_epochs: int = 4
    # Model families the text-linear head searches (the prototype compared L2, L1, forests).
    text_families: tuple[str, ...] = ("l2", "l1", "rf")
    # Accuracy the accepted products must reach, certified with 95% confidence (the gate's
    # accept thresholds; `prodcat.gate.calibration.certify_threshold`).
    target_accuracy: float = DEFAULT_TARGET_ACCURACY
    # Calibrate the gate on out-of-fold logits of the training + validation parts from heads
    # cross-fitted on this many folds (`prodcat.training.crossfit`); 0: on the validation part.
    # Ignored with --fine-tune / --fine-tune-whole (see `calibration_folds_used`).
    calibration_folds: int = DEFAULT_FOLDS
    # Record the training photos' median side in the model and bring larger photos down to it
    # before the photo network, in training and prediction (docs/resolution.md).
    fit_photos: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(
                f"target_accuracy={self.target_accuracy}; expected a number in (0, 1], e.g. 0.995"
            )
        if self.model not in HEAD_NAMES or self.model == "fine-tune":
            raise ValueError(
                f"--model {self.model!r} is not a head training builds; expected one of "
                f"{', '.join(n for n in HEAD_NAMES if n != 'fine-tune')} (--fine-tune trains the "
                "last photo blocks)"
            )
        if self.top_classes is not None and self.min_class_count is not None:
            raise ValueError("pass --top-classes or --min-class-count, not both")
        for name in ("top_classes", "min_class_count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value}; expected a positive number")
        for flag, on in (
            ("--fine-tune", self.fine_tune),
            ("--fine-tune-whole", self.fine_tune_whole),
        ):
            if on and not self.uses_image:
                raise ValueError(
                    f"{flag} trains the photo network: use it with a model that reads photos "
                    "(--model fusion-blend, fusion or image)"
                )
        if self.fine_tune and self.fine_tune_whole:
            raise ValueError("pass --fine-tune (the last blocks) or --fine-tune-whole, not both")
        if self.calibration_folds == 1 or self.calibration_folds < 0:
            raise ValueError(
                f"calibration_folds={self.calibration_folds}; expected 0 (validation part only) "
                "or 2 or more"
            )
        if self.fine_tune_epochs < 1:
            raise ValueError(f"fine_tune_epochs={self.fine_tune_epochs}; expected 1 or more")
        named_size = parse_encoder_name(self.image_encoder)[1]
        if named_size is not None and self.image_size not in (None, named_size):
            raise ValueError(
                f"--image-encoder {self.image_encoder} names size {named_size} but --image-size "
                f"is {self.image_size}; give the size once"
            )
        if self.image_size is not None:
            check_size(self.image_size)
        self._check_text_encoder()

    def _check_text_encoder(self) -> None:
        """A title head fits its own bag of words; the others read embeddings from the cache."""
        text = self.resolved_text_encoder
        if text is None:
            if self.text_encoder:
                raise ValueError(f"--model {self.model} reads no title: drop --text-encoder")
            return
        words = fits_words(text)
        if self.head_class.modalities and words:
            raise ValueError(
                f"--model {self.model} needs dense text embeddings (--text-encoder minilm), "
                f"not {text!r}"
            )
        if not self.head_class.modalities and not words:
            raise ValueError(
                f"--model {self.model} fits its own bag of words: --text-encoder bow or tfidf, "
                f"not {text!r}"
            )

    @property
    def head_class(self) -> type[Head]:
        return head_class("fine-tune" if self.fine_tune else self.model)

    @property
    def calibration_folds_used(self) -> int:
        """The folds the gate is cross-fitted on: none when the photo network is tuned.

        --fine-tune-whole tunes the photo encoder on the training part, so a training product's
        features already carry its label and out-of-fold logits would be over-confident; a
        --fine-tune head costs minutes per fit (k more would multiply training time). Both
        calibrate on the validation part, as before cross-fitting.
        """
        return 0 if self.fine_tune or self.fine_tune_whole else self.calibration_folds

    @property
    def uses_image(self) -> bool:
        return any(m.startswith("image") for m in head_class(self.model).modalities)

    @property
    def resolved_image_encoder(self) -> str | None:
        """The encoder whose output the head takes: the frozen trunk when fine-tuning."""
        if not self.uses_image:
            return None
        base, size = self.image_encoder_and_size
        return encoder_name(f"{base}-trunk" if self.fine_tune else base, size)

    @property
    def image_encoder_and_size(self) -> tuple[str, int | None]:
        """The image encoder's registered name and the input size asked for (None: native)."""
        base, named_size = parse_encoder_name(self.image_encoder)
        return base, self.image_size or named_size

    @property
    def model_text_encoder(self) -> str | None:
        """The text encoder the model runs: a title head fits its own words, so none for it."""
        return self.resolved_text_encoder if head_class(self.model).modalities else None

    @property
    def resolved_text_encoder(self) -> str | None:
        """The title's encoder: the one asked for, else the head's (None: it reads no title)."""
        default = head_class(self.model).default_text_encoder
        return (self.text_encoder or default) if default else None


@dataclass
class TrainResult:
    model: Model
    parts: dict[str, list[Product]]
    # Class left out of training -> its training products (0: only in validation / test).
    excluded: dict[str, int]
    validation: dict[str, Any]
    test: dict[str, Any]
    test_proba: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    # With --fine-tune-whole: the tuned torch classifier (photo network + its linear layer), for
    # studies and checks; the model itself runs the ONNX export.
    tuned_network: Any = None


def select_classes(
    train: Sequence[Product], options: TrainOptions, others: Sequence[Product] = ()
) -> tuple[set[str], dict[str, int]]:
    """The classes to learn, from training counts; and the ones left out with their training
    counts, those seen only in `others` (validation, test) with 0 (the rule: catalogue.classes)."""
    choice = choose_classes(
        train, others, top_classes=options.top_classes, min_class_count=options.min_class_count
    )
    if len(choice.learned) < 2:
        raise ValueError(
            f"only {len(choice.learned)} class(es) have enough training products "
            f"({choice.train_counts}); a classifier needs at least 2: lower --min-class-count or "
            "add products"
        )
    return set(choice.learned), choice.left_out


def make_head(options: TrainOptions) -> Head:
    """The head the options name, built by its own class (`Head.for_training`)."""
    base, size = options.image_encoder_and_size
    return options.head_class.for_training(
        seed=options.seed,
        text_encoder=options.resolved_text_encoder,
        image_encoder=base,
        image_size=size,
        text_families=options.text_families,
    )


def train(
    catalogue: Catalogue,
    options: TrainOptions,
    *,
    cache: FeatureCache,
    progress: bool = True,
) -> TrainResult:
    """Train a model on the labelled products of `catalogue` (80/10/10 grouped split)."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    labelled = [p for p in catalogue.products if p.label]
    if not labelled:
        raise ValueError(f"{catalogue.source} has no labelled products to train on")
    parts = split_catalogue(labelled)
    kept, excluded = select_classes(parts["train"], options, parts["validation"] + parts["test"])
    train_part = [p for p in parts["train"] if format_path(p.label or ()) in kept]

    model = Model(
        head=make_head(options),
        image_encoder=options.resolved_image_encoder,
        text_encoder=options.model_text_encoder,
        encoder_versions={},
        options={**asdict(options), "text_encoder": options.resolved_text_encoder},
        fingerprint=training_fingerprint(train_part),
    )
    if options.fit_photos and options.uses_image:
        model.photo_side = median_photo_side(p.image for p in train_part if p.image is not None)
    tuned: TunedPhotoNetwork | None = None
    if options.fine_tune_whole:
        tune_start = time.perf_counter()
        tuned = tune_photo_encoder(
            train_part, [p for p in parts["validation"] if _label(p) in kept], options, progress
        )
        model.image_encoder = tuned.encoder
        model.encoder_files = {tuned.encoder: tuned.onnx_file}
        model.options["fine_tune_whole_result"] = tuned.summary()
        seconds["fine-tune"] = time.perf_counter() - tune_start
    encode_start = time.perf_counter()
    everything = train_part + parts["validation"] + parts["test"]
    inputs, _ = model.encode(everything, cache, progress=progress)
    model.encoder_versions = _encoder_versions(model)
    seconds["encode"] = time.perf_counter() - encode_start

    n_train, n_val = len(train_part), len(parts["validation"])
    val_index = [i for i, p in enumerate(parts["validation"], n_train) if _label(p) in kept]
    fit_start = time.perf_counter()
    with training_progress(progress):
        model.head.fit(
            inputs.subset(np.arange(n_train)),
            [_label(p) for p in train_part],
            eval_set=(inputs.subset(val_index), [_label(everything[i]) for i in val_index]),
        )
    seconds["fit"] = time.perf_counter() - fit_start
    # The nearest training products an explanation shows (`prodcat.model.explain`).
    model.neighbours = NeighbourIndex.build_if_any(train_part, inputs.subset(np.arange(n_train)))

    val_inputs = inputs.subset(np.arange(n_train, n_train + n_val))
    test_inputs = inputs.subset(np.arange(n_train + n_val, len(everything)))
    gate_start = time.perf_counter()
    seconds["cross-fit"] = attach_gate(
        model,
        (train_part, inputs.subset(np.arange(n_train))),
        (parts["validation"], val_inputs),
        options,
    )
    seconds["gate"] = time.perf_counter() - gate_start
    validation = evaluate_products(
        model, parts["validation"], model.predict_proba(val_inputs), inputs=val_inputs
    )
    # The drift alarm's reference: what the validation part, every product of it, looked like.
    if parts["validation"]:
        model.reference = Reference.build(
            model.observe(parts["validation"], val_inputs), len(model.classes), seed=options.seed
        )
    # What `prodcat extend` calibrates added classes against (prodcat.model.extension).
    model.extension_sample = validation_sample(model, parts["validation"], val_inputs, options.seed)
    test_proba = model.predict_proba(test_inputs)
    test = evaluate_products(model, parts["test"], test_proba, inputs=test_inputs)
    model.figures = {
        "validation": _headline(validation),
        "test": _headline(test),
        "n_train": n_train,
        "excluded_classes": excluded,
    }
    seconds["total"] = time.perf_counter() - start
    model.options["seconds"] = seconds
    network = tuned.network if tuned is not None else None
    return TrainResult(model, parts, excluded, validation, test, test_proba, seconds, network)


def validation_sample(
    model: Model, validation: Sequence[Product], inputs: Inputs, seed: int = 0
) -> CalibrationSample:
    """A sample of the validation part (embeddings, the head's logits, true classes) kept in the
    model folder, so that `prodcat extend` can calibrate added classes against the head."""
    labels = class_indices([_label(p) for p in validation], model.classes)
    return CalibrationSample.build(inputs, model.head.decision_logits(inputs), labels, seed=seed)


def tune_photo_encoder(
    train_part: Sequence[Product],
    validation: Sequence[Product],
    options: TrainOptions,
    progress: bool = True,
) -> TunedPhotoNetwork:
    """Fine-tune the whole photo network on the training part's photos (`--fine-tune-whole`)."""
    from prodcat.encoders.image import EfficientNetLiteEncoder
    from prodcat.paths import tuned_scratch_dir
    from prodcat.training.whole_network import WholeTuneSettings, decode_photos, tune_whole_network

    base, size = options.image_encoder_and_size
    frozen = EfficientNetLiteEncoder(base, size=size)
    classes = sorted({_label(p) for p in train_part})
    index = {c: i for i, c in enumerate(classes)}
    train_photos, validation_photos = (
        decode_photos(
            part,
            [index[_label(p)] for p in part],
            frozen,
            description=f"decoding {name} photos for fine-tuning",
            progress=progress,
        )
        # Products without a photo train the head (from their title) but not the photo network.
        for name, part in (
            ("training", [p for p in train_part if p.image]),
            ("validation", [p for p in validation if p.image]),
        )
    )
    tuned = tune_whole_network(
        frozen,
        train_photos,
        validation_photos,
        len(classes),
        tuned_scratch_dir(),
        WholeTuneSettings(epochs=options.fine_tune_epochs, seed=options.seed),
        progress=progress,
    )
    if tuned.errors:
        warnings.warn(
            f"fine-tuning: {len(tuned.errors):,} photos could not be read and were left out of "
            f"fine-tuning (e.g. {next(iter(tuned.errors.items()))})",
            RuntimeWarning,
            stacklevel=2,
        )
    return tuned


def attach_gate(
    model: Model,
    train_part: tuple[Sequence[Product], Inputs],
    validation: tuple[Sequence[Product], Inputs],
    options: TrainOptions,
    calibration: CaseData | None = None,
) -> float:
    """Fit the gate (calibration, thresholds, OOD reference) of a fitted head: calibrated on
    cross-fitted logits of both parts (or on validation), OOD reference from validation. Returns
    the seconds spent cross-fitting (0 without). `calibration`: cross-fitted logits computed
    before (`cross_fitted_calibration`), to refit a gate without fitting the folds again."""
    train_y = class_indices([_label(p) for p in train_part[0]], model.classes)
    validation_y = class_indices([_label(p) for p in validation[0]], model.classes)
    uses_image = model.image_encoder is not None
    uses_text = options.resolved_text_encoder is not None
    folds = options.calibration_folds_used
    start = time.perf_counter()
    if folds and calibration is None:
        calibration = cross_fitted_calibration(model, train_part, validation, options)
    cross_fit_seconds = time.perf_counter() - start
    model.gate = fit_gate(
        model.head,
        train_inputs=train_part[1],
        train_y=train_y,
        validation_inputs=validation[1],
        validation_y=validation_y,
        uses_image=uses_image,
        uses_text=uses_text,
        target_accuracy=options.target_accuracy,
        seed=options.seed,
        calibration=calibration,
        folds=folds,
    )
    return cross_fit_seconds


def cross_fitted_calibration(
    model: Model,
    train_part: tuple[Sequence[Product], Inputs],
    validation: tuple[Sequence[Product], Inputs],
    options: TrainOptions,
) -> CaseData:
    """Out-of-fold logits of the training + validation parts, per modality case."""
    labels = [_label(p) for p in [*train_part[0], *validation[0]]]
    return cross_fitted_logits(
        # Fold heads keep the shipped head's choices (its C, say): their logits must share its
        # confidence scale to calibrate it.
        model.head.refit_copy,
        [*train_part[0], *validation[0]],
        join_inputs([train_part[1], validation[1]]),
        class_indices(labels, model.classes),
        model.classes,
        uses_image=model.image_encoder is not None,
        uses_text=options.resolved_text_encoder is not None,
        folds=options.calibration_folds_used,
        seed=options.seed,
    )


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "accuracy",
        "macro_f1",
        "level_accuracy",
        "top3_accuracy",
        "n_in_class",
        "n_out_of_class",
        "coverage",
        "accepted_accuracy",
        "review_top3",
        "ece",
        "ece_uncalibrated",
        "ood_auroc",
        "ood_flagged_at_95",
        "guaranteed_accuracy",
        "n_calibration",
        "delta",
        "blocked_classes",
    )
    return {k: metrics[k] for k in keys if k in metrics}


def _encoder_versions(model: Model) -> dict[str, str]:
    names = [n for n in (model.image_encoder, model.text_encoder) if n]
    return {
        part: model.get_encoder(part).version for name in names for part in split_encoders(name)
    }


def _label(product: Product) -> str:
    return format_path(product.label or ())


__all__ = [
    "TrainOptions",
    "TrainResult",
    "attach_gate",
    "cross_fitted_calibration",
    "train",
    "tune_photo_encoder",
]
