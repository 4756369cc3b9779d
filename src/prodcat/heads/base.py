"""The one contract every classification head follows, and the pieces the heads share.

A head maps what is known about n products (`Inputs`: titles, frozen image and text features, and
which of them are present) to probabilities over the classes it was fitted on. The contract is
scikit-learn's: `__init__` only stores hyperparameters, `fit` validates and learns, attributes
learnt from data end in ``_``. Saving writes ``config.json`` and ``weights.safetensors`` and never
pickles, so a saved head is safe to open and can be read without this package's classes.
"""

# ruff: noqa: N803, N806  (scikit-learn's names: X for inputs, C/Cs for inverse regularisation)

from __future__ import annotations

import inspect
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import safetensors.numpy

from prodcat.encoders.base import not_fitted_error

from .inputs import MASK_OF, Inputs

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
_FORMAT = "prodcat.head"
_FORMAT_VERSION = 1
# The share of the training rows held out to choose hyperparameters / stop early when fit gets no
# eval_set.
HOLDOUT_FRACTION = 0.1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-subtracted, so large logits do not overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def check_labels(y: object, n: int) -> np.ndarray:
    """Labels as a 1-d array of non-empty str, one per product."""
    if isinstance(y, str | bytes):
        raise TypeError("y is a single string; expected one class path per product")
    labels = list(y)  # type: ignore[call-overload]
    if len(labels) != n:
        raise ValueError(
            f"y has {len(labels)} labels but X has {n} products; expected one label per product"
        )
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(
                f"y[{index}] is {label!r}; expected a non-empty class path such as "
                "'Footwear > Shoes > Sports Shoes'"
            )
    return np.array(labels, dtype=object)


def validation_split(
    X: Inputs,
    y: np.ndarray,
    eval_set: tuple[Inputs, np.ndarray] | None,
    random_state: int,
    fraction: float = HOLDOUT_FRACTION,
) -> tuple[Inputs, np.ndarray, Inputs, np.ndarray, str]:
    """(X_fit, y_fit, X_val, y_val, how chosen): the eval_set, else a stratified holdout of X."""
    if eval_set is not None:
        return X, y, eval_set[0], eval_set[1], "eval_set"
    train, val = stratified_holdout(y.astype(str), fraction, random_state)
    selection = f"stratified {fraction:.0%} holdout of the training rows"
    return X.subset(train), y[train], X.subset(val), y[val], selection


def stratified_holdout(
    y: np.ndarray, fraction: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified (train, validation) row positions.

    Each class gives ``round(fraction * count)`` rows (none from classes too small to spare one
    and keep one for training), so singleton classes stay trainable; tiny data with no such class
    gets one row from every class with at least two. Used when no eval_set is passed.
    """
    rng = np.random.default_rng(random_state)
    held: list[np.ndarray] = []
    classes, inverse = np.unique(y.astype(str), return_inverse=True)
    groups = [np.flatnonzero(inverse == k) for k in range(len(classes))]
    for rows in groups:
        take = round(fraction * len(rows))
        if 0 < take < len(rows):
            held.append(rng.permutation(rows)[:take])
    if not held:
        held = [rng.permutation(rows)[:1] for rows in groups if len(rows) >= 2]
    if not held:
        raise ValueError(
            "every class has a single row, so no validation rows can be held out; pass eval_set"
        )
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


def class_positions(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Positions of labels `y` in the sorted `classes`; -1 for labels the head does not know
    (always counted wrong)."""
    labels = y.astype(str)
    pos = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    return np.where(classes[pos] == labels, pos, -1)


def json_ready(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types (for config.json and reports)."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    return value


class Head(ABC):
    """A classifier over the full class paths of a taxonomy; see the module docstring.

    Subclasses implement `_fit`, `_logits` (pre-softmax scores), `_config` / `_weights` (what to
    save besides the params and classes) and `_restore` (their inverse). Everything a user calls
    lives here so that every head validates and fails the same way.
    """

    name: ClassVar[str]
    # The feature matrices of Inputs the head needs ("image", "text", "image_activations");
    # titles are always there.
    modalities: ClassVar[tuple[str, ...]] = ()
    # The text encoder a training feeds it unless told otherwise: a bag of words it fits on the
    # titles itself ("tfidf"), embeddings from the feature cache ("minilm"), or None (no text).
    default_text_encoder: ClassVar[str | None] = None
    # How a saved head runs without torch: "graph" (from its head.onnx), "part" (it loads itself
    # and runs a part of it from head.onnx), None (it needs no graph).
    onnx_graph: ClassVar[str | None] = None
    # Fitted attributes written by `fit` (besides classes_ and validation_report_).
    classes_: np.ndarray
    validation_report_: dict[str, Any]

    # -- parameters ------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    @classmethod
    def for_training(
        cls,
        *,
        seed: int,
        text_encoder: str | None = None,
        image_encoder: str = "effnet-lite0",
        image_size: int | None = None,
        text_families: tuple[str, ...] = (),
    ) -> Self:
        """A new head as `prodcat train` builds it from its options (the seed, and what a head
        of this kind reads); heads with more to set override this."""
        del text_encoder, image_encoder, image_size, text_families  # what other heads read
        if "random_state" in cls._param_names():
            return cls(random_state=seed)  # type: ignore[call-arg]
        return cls()

    def refit_copy(self) -> Self:
        """A new, unfitted head that keeps the choices this fitted one made on validation (its
        regularisation, its model family), so that heads fitted again on other folds, whose logits
        calibrate this one (`prodcat.training.crossfit`), share its confidence scale. By default
        the same parameters; heads that choose something in `fit` override this."""
        self._check_fitted("refit_copy")
        return type(self)(**self.get_params())

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments given to `__init__` (scikit-learn's contract)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        X: Inputs,
        y: Sequence[str] | np.ndarray,
        *,
        eval_set: tuple[Inputs, Sequence[str] | np.ndarray] | None = None,
    ) -> Self:
        """Learn from `X`/`y`; `eval_set` (X_val, y_val) chooses hyperparameters / stops early.

        Without `eval_set` a deterministic stratified 10% of the training rows is held out for
        that. Returns self.
        """
        self._check_inputs_type(X, "X")
        labels = check_labels(y, len(X))
        classes = np.array(sorted(set(labels.tolist())), dtype=object)
        if len(classes) < 2:
            raise ValueError(
                f"y has {len(classes)} class ({classes.tolist()}); a classifier needs at least 2"
            )
        self._check_fit_inputs(X)
        eval_checked = None if eval_set is None else self._check_eval_set(eval_set, X)
        try:
            self._fit(X, labels, classes.astype(str), eval_checked)
        except BaseException:
            self._forget_fit()  # a failed fit must not leave a half-fitted head behind
            raise
        return self

    def _forget_fit(self) -> None:
        for attribute in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attribute)

    def _check_eval_set(self, eval_set: object, X: Inputs) -> tuple[Inputs, np.ndarray]:
        """(X_val, y_val) with the same feature widths as the training inputs `X`."""
        if not isinstance(eval_set, tuple) or len(eval_set) != 2:
            raise TypeError("eval_set must be a tuple (X_val: Inputs, y_val: sequence of labels)")
        X_val = self._check_inputs_type(eval_set[0], "eval_set[0]")
        labels = check_labels(eval_set[1], len(X_val))
        if len(labels) == 0:
            raise ValueError("eval_set has no products; pass None to hold out training rows")
        self._check_fit_inputs(X_val)
        for modality in self.modalities:
            width = self._features(X, modality).shape[1]
            val_width = self._features(X_val, modality).shape[1]
            if val_width != width:
                raise ValueError(
                    f"eval_set has {val_width} {modality} features but X has {width}; "
                    f"encode both with the same {modality} encoder"
                )
        return X_val, labels

    def _check_inputs_type(self, X: object, what: str) -> Inputs:
        if not isinstance(X, Inputs):
            raise TypeError(
                f"{what} is a {type(X).__name__}; {type(self).__name__} expects "
                "prodcat.heads.Inputs(texts=..., image=..., text=...)"
            )
        return X

    def _check_fit_inputs(self, X: Inputs) -> None:
        """Refuse inputs lacking a modality this head needs (X and eval_set, before fit)."""
        for modality in self.modalities:
            self._features(X, modality)

    def _features(self, X: Inputs, modality: str) -> np.ndarray:
        """X.image, X.text or X.image_activations, refusing None with what to pass instead."""
        values = getattr(X, modality)
        if values is None:
            raise ValueError(
                f"{type(self).__name__} needs {modality} features but X.{modality} is None; pass "
                f"Inputs({modality}=...) (zeros and {MASK_OF[modality]}=False for products "
                "without one)"
            )
        return np.asarray(values)

    @abstractmethod
    def _fit(
        self,
        X: Inputs,
        y: np.ndarray,
        classes: np.ndarray,
        eval_set: tuple[Inputs, np.ndarray] | None,
    ) -> None:
        """Set classes_, validation_report_ and the head's own fitted state."""

    # -- predicting ------------------------------------------------------------------------
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "classes_"):
            raise not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X, y) before "
                f"{method}, or load a saved head with load_head(folder)."
            )

    def _check_predict_inputs(self, X: object, method: str) -> Inputs:
        self._check_fitted(method)
        checked = self._check_inputs_type(X, "X")
        self._check_features(checked)
        return checked

    def _check_features(self, X: Inputs) -> None:
        """Refuse features whose width differs from the fitted ``n_<modality>_features_``."""
        for modality in self.modalities:
            self._check_width(X, modality, getattr(self, f"n_{modality}_features_"))

    def _check_width(self, X: Inputs, modality: str, expected: int) -> None:
        """Clear error for missing or mis-sized `modality` ("image"/"text") features."""
        features = self._features(X, modality)
        head = type(self).__name__
        if features.shape[1] != expected:
            raise ValueError(
                f"X has {features.shape[1]} {modality} features, but {head} was fitted with "
                f"{expected}; use the same {modality} encoder as at fit time"
            )

    def decision_logits(self, X: Inputs) -> np.ndarray:
        """(n, n_classes) float64 pre-softmax scores (log-probabilities for tree models).

        For temperature scaling and the gate's max-softmax out-of-distribution signal.
        """
        checked = self._check_predict_inputs(X, "decision_logits")
        return self._logits(checked)

    def predict_proba(self, X: Inputs) -> np.ndarray:
        """(n, n_classes) float64 probabilities, columns in `classes_` order, rows sum to 1."""
        checked = self._check_predict_inputs(X, "predict_proba")
        return self._proba(checked)

    def predict(self, X: Inputs) -> np.ndarray:
        """The most probable class path per product (``classes_[argmax]``)."""
        checked = self._check_predict_inputs(X, "predict")
        return self.classes_[np.argmax(self._proba(checked), axis=1)]

    @abstractmethod
    def _logits(self, X: Inputs) -> np.ndarray:
        """Pre-softmax scores for validated inputs."""

    def _proba(self, X: Inputs) -> np.ndarray:
        return softmax(self._logits(X))

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` (numpy arrays only, no pickle)."""
        self._check_fitted("save")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "name": self.name,
            "params": json_ready(self.get_params()),
            "classes": [str(c) for c in self.classes_],
            "validation_report": json_ready(self.validation_report_),
            **json_ready(self._config()),
        }
        weights = {k: np.ascontiguousarray(v) for k, v in self._weights().items()}
        safetensors.numpy.save_file(weights, str(path / WEIGHTS_FILE))
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """Rebuild a head saved by `save`; predictions are bit-identical to the saved one's."""
        config, weights = read_saved(folder)
        if config["name"] != cls.name:
            raise ValueError(
                f"{folder} holds a {config['name']!r} head, not {cls.name!r}; open it with "
                "prodcat.heads.load_head(folder)"
            )
        head = cls(**cls._params_from_json(config["params"]))
        head.classes_ = np.array(config["classes"], dtype=object).astype(str)
        head.validation_report_ = config.get("validation_report", {})
        head._restore(config, weights)
        return head

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        """JSON lists back to the tuples `__init__` was given, also inside dict parameters (a
        blend's per-part settings); override for other types."""
        return {k: _tuples(v) for k, v in params.items()}

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """Fitted extras for config.json (feature widths, chosen hyperparameters...)."""

    @abstractmethod
    def _weights(self) -> dict[str, np.ndarray]:
        """Named numpy arrays for weights.safetensors."""

    @abstractmethod
    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        """Set the fitted state from what `_config` and `_weights` wrote."""


def read_config(folder: str | Path) -> dict[str, Any]:
    """The config.json of a saved head, with errors naming the folder and what is wrong."""
    path = Path(folder)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist; expected a folder written by Head.save "
            f"({CONFIG_FILE} + {WEIGHTS_FILE})"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        raise ValueError(f"{config_path} is not a prodcat head config (no format {_FORMAT!r})")
    if config.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {config.get('format_version')!r}; this prodcat "
            f"reads version {_FORMAT_VERSION}"
        )
    return config


def read_saved(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, weights) of a saved head."""
    config = read_config(folder)
    weights_path = Path(folder) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{weights_path} does not exist; expected a folder written by Head.save "
            f"({CONFIG_FILE} + {WEIGHTS_FILE})"
        )
    return config, safetensors.numpy.load_file(str(weights_path))


def _tuples(value: Any) -> Any:
    """Lists (at any depth, dict values included) as tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value
