"""The photo+title fusion network blended with a linear model on the title's words.

The fusion network reads sentence embeddings, which blur the brand names, model numbers and rare
words that a bag of words keeps; the linear model sees only words. Their weighted geometric mean
(``w * log p_fusion + (1 - w) * log p_words``, renormalised) keeps both, and a product without a
title gets the fusion network alone. `w` is the grid value with the lowest log-loss on the
validation part (smoother than accuracy, which a few products move). In an exploration on FULL
(seed 0, a word + character TF-IDF model) the blend took test accuracy from 97.27% (the network
alone) to 97.43% and macro-F1 from 0.951 to 0.955 (an exploration, not a kept benchmark;
docs/benchmarks.md has the measured blend rows).
"""

# ruff: noqa: N803, N806  (scikit-learn's names: X for inputs)

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Head, class_positions, softmax, validation_split
from .fusion import FusionHead
from .inputs import Inputs
from .text_linear import TextLinearHead

WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# The words model's regularisation. Random search on validation picked C = 17 on both T10 and FULL
# (6 fits, 123 s on FULL); one fit at C = 20 takes a sixth of that, and the blend weight, still
# chosen on validation, absorbs a less than perfect C.
WORDS_C = 20.0
# Words seen in one training title only are dropped: on FULL that shrinks the vocabulary from
# 33.6k to 12.9k terms and halves the fit (21 -> 10 s) at the same validation accuracy (97.65%)
# and a lower validation log-loss (0.1033 -> 0.1008).
WORDS_MIN_DF = 2
_FLOOR = 1e-12  # a probability of exactly 0 would make the geometric mean -inf


class BlendHead(Head):
    """`FusionHead` (photo + sentence embedding) x `TextLinearHead` (title words), blended.

    Parameters:
        fusion: keyword arguments of the `FusionHead`.
        words: keyword arguments of the `TextLinearHead` (default: TF-IDF + L2 logistic
            regression at C = `WORDS_C`; pass e.g. {"Cs": None} to search C on validation).
        weights: the fusion weights tried; the validation log-loss picks one.
        random_state: seeds both heads.
    """

    name: ClassVar[str] = "fusion-blend"
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    default_text_encoder: ClassVar[str | None] = "minilm"
    onnx_graph: ClassVar[str | None] = "part"  # its fusion network; the words part needs none

    def __init__(
        self,
        *,
        fusion: dict[str, Any] | None = None,
        words: dict[str, Any] | None = None,
        weights: tuple[float, ...] = WEIGHTS,
        random_state: int = 0,
    ) -> None:
        self.fusion = fusion
        self.words = words
        self.weights = weights
        self.random_state = random_state

    def _heads(self) -> tuple[FusionHead, TextLinearHead]:
        fusion = {"random_state": self.random_state, **(self.fusion or {})}
        words = {
            "families": ("l2",),
            "Cs": (WORDS_C,),
            "min_df": WORDS_MIN_DF,
            "random_state": self.random_state,
            **(self.words or {}),
        }
        return FusionHead(**fusion), TextLinearHead(**words)

    def _fit(
        self,
        X: Inputs,
        y: np.ndarray,
        classes: np.ndarray,
        eval_set: tuple[Inputs, np.ndarray] | None,
    ) -> None:
        weights = tuple(float(w) for w in self.weights)
        if not weights or any(not 0.0 <= w <= 1.0 for w in weights):
            raise ValueError(f"weights={self.weights!r}; expected numbers in [0, 1]")
        X, y, X_val, y_val, _ = validation_split(X, y, eval_set, self.random_state)
        eval_set = (X_val, y_val)
        self.classes_ = classes
        self.__dict__.pop("_saved_fusion", None)
        self.fusion_, self.words_ = self._heads()
        # The words model (scikit-learn, one thread, mostly outside the GIL) trains while the
        # network (torch) does; each is deterministic on its own, so the result does not change.
        with ThreadPoolExecutor(max_workers=1) as pool:
            # In a copy of this context, so that the words model's progress is drawn too.
            context = contextvars.copy_context()
            words = pool.submit(context.run, self.words_.fit, X, y, eval_set=eval_set)
            self.fusion_.fit(X, y, eval_set=eval_set)
            words.result()
        self._set_widths()
        X_val, y_val = eval_set
        known = class_positions(classes, y_val)
        rows = np.flatnonzero(known >= 0)
        X_known = X_val.subset(rows)
        z_f, log_w = self._parts_logits(X_known)
        trials = []
        for w in weights:
            proba = softmax(_blend(z_f, log_w, X_known.has_text, w))
            loss = -float(
                np.mean(np.log(np.maximum(proba[np.arange(len(rows)), known[rows]], _FLOOR)))
            )
            accuracy = float(np.mean(proba.argmax(axis=1) == known[rows]))
            trials.append({"weight": w, "val_log_loss": loss, "val_accuracy": accuracy})
        best = min(trials, key=lambda t: t["val_log_loss"])
        self.weight_ = float(best["weight"])
        self.validation_report_ = {
            "head": self.name,
            "selection": "validation log-loss of the blend weight",
            "metric": "log_loss",
            "best": best,
            "trials": trials,
            "fusion": self.fusion_.validation_report_,
            "words": self.words_.validation_report_,
        }

    def _parts_logits(self, X: Inputs) -> tuple[np.ndarray, np.ndarray]:
        """The fusion network's raw logits (a product without a title keeps them as they are)
        and the words model's log-probabilities."""
        return (
            self.fusion_.decision_logits(X),
            np.log(np.maximum(self.words_.predict_proba(X), _FLOOR)),
        )

    def _logits(self, X: Inputs) -> np.ndarray:
        z_f, log_w = self._parts_logits(X)
        return _blend(z_f, log_w, X.has_text, self.weight_)

    # -- persistence: each part's config and weights, under its own prefix --------------------
    def _config(self) -> dict[str, Any]:
        return {"weight": self.weight_, "parts": {k: v[0] for k, v in self._parts().items()}}

    def _weights(self) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.{key}": value
            for prefix, (_, weights) in self._parts().items()
            for key, value in weights.items()
        }

    def _parts(self) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """Each part's (config, weights); a loaded fusion part is written back as it was read."""
        saved = self.__dict__.get("_saved_fusion")
        fusion = saved or (_part_config(self.fusion_), self.fusion_._weights())
        return {"fusion": fusion, "words": (_part_config(self.words_), self.words_._weights())}

    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.weight_ = float(config["weight"])
        parts = {
            prefix: (
                config["parts"][prefix],
                {
                    k.removeprefix(f"{prefix}."): v
                    for k, v in weights.items()
                    if k.startswith(prefix)
                },
            )
            for prefix in ("fusion", "words")
        }
        self.words_ = _rebuilt(TextLinearHead, self.classes_, *parts["words"])
        # The fusion network is rebuilt on first use: prediction may run it from its ONNX graph
        # instead (`prodcat.heads.onnx_runtime`), and then torch is never imported.
        self._saved_fusion = parts["fusion"]
        self.n_image_features_ = int(parts["fusion"][0]["n_image_features"])
        self.n_text_features_ = int(parts["fusion"][0]["n_text_features"])

    def __getattr__(self, name: str) -> Any:
        if name == "fusion_" and "_saved_fusion" in self.__dict__:
            self.fusion_ = _rebuilt(FusionHead, self.classes_, *self.__dict__["_saved_fusion"])
            return self.fusion_
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def export_onnx(self, path: str | Path) -> Path:
        """The fusion network's graph (inputs as `FusionHead.export_onnx`); the words part needs
        no torch and runs from its saved arrays."""
        fusion = self.fusion_
        if not isinstance(fusion, FusionHead):
            raise TypeError(
                "this blend runs its fusion part from a graph already; nothing to export"
            )
        return fusion.export_onnx(path)

    def _set_widths(self) -> None:
        """The feature widths the shared input checks compare against: the fusion network's."""
        self.n_image_features_ = self.fusion_.n_image_features_
        self.n_text_features_ = self.fusion_.n_text_features_


def _blend(z_f: np.ndarray, log_w: np.ndarray, has_text: np.ndarray, weight: float) -> np.ndarray:
    """Logits whose softmax is p_fusion^w * p_words^(1-w), renormalised; a product without a title
    keeps the fusion logits alone (the words model would only add its class prior)."""
    blended = weight * z_f + (1.0 - weight) * log_w
    return np.where(has_text[:, None], blended, z_f)


def _part_config(head: Head) -> dict[str, Any]:
    return {"params": head.get_params(), **head._config()}


def _rebuilt(
    cls: type[Head], classes: np.ndarray, config: dict[str, Any], weights: dict[str, np.ndarray]
) -> Any:
    head = cls(**cls._params_from_json(config["params"]))
    head.classes_ = classes
    head.validation_report_ = {}
    head._restore(config, weights)
    return head
