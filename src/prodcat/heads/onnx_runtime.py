"""A saved PyTorch head (fusion, fine-tune) run from its exported ONNX graph, without torch.

`Model.save` writes the graph next to the head's weights (``head/head.onnx``, from the head's
`export_onnx`); `Model.load` opens it here for prediction, so serving and `prodcat predict` never
import torch. The stand-in is predict-only: it answers `predict_proba` / `decision_logits` with the
same validation as the torch head, and `save` copies the folder it came from.
"""

# ruff: noqa: N803  (scikit-learn's names: X for inputs)

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import Head, read_config
from .inputs import Inputs

if TYPE_CHECKING:
    import onnxruntime

ONNX_FILE = "head.onnx"
MASK_INPUTS = {"image_mask": "has_image", "text_mask": "has_text"}
# Rows per ONNX Runtime call: bounds the fine-tune tail's activation memory (~60 MB per 256 rows).
PREDICT_BATCH = 256
# The fusion network is a small MLP: one thread runs a product in a fraction of a millisecond,
# where waking a pool of threads on busy cores cost milliseconds per call (issue 19). The
# fine-tune tail (convolutions) keeps every core.
SMALL_HEADS = ("fusion", "fusion-blend")


def onnx_path(folder: str | Path) -> Path:
    """Where a saved head folder keeps its exported graph."""
    return Path(folder) / ONNX_FILE


class OnnxHead(Head):
    """Predict-only head: a saved fusion / fine-tune head's graph under ONNX Runtime.

    `kind` is the saved head's name ("fusion", "fine-tune"); the feature inputs the graph expects
    (names and widths) are read from the graph itself.
    """

    name: ClassVar[str] = "onnx"

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads

    @classmethod
    def from_folder(cls, folder: str | Path, *, threads: int | None = None) -> OnnxHead:
        """Open `folder/head.onnx` with the classes of `folder/config.json`."""
        from prodcat.encoders.base import onnx_session, resolve_threads

        folder = Path(folder)
        config = read_config(folder)
        path = onnx_path(folder)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; re-save the model with this prodcat (Model.save exports "
                "the head to ONNX) or load it with runtime='torch'"
            )
        if threads is None and str(config["name"]) in SMALL_HEADS:
            threads = 1
        head = cls(threads=resolve_threads(threads))
        head.kind_ = str(config["name"])
        head.folder_ = folder
        head.classes_ = np.array(config["classes"], dtype=object).astype(str)
        head.validation_report_ = config.get("validation_report", {})
        head.session_ = onnx_session(path, head.threads)
        head.feature_widths_ = {
            i.name: int(i.shape[1]) for i in head.session_.get_inputs() if i.name not in MASK_INPUTS
        }
        return head

    kind_: str
    folder_: Path
    session_: onnxruntime.InferenceSession
    feature_widths_: dict[str, int]

    def _fit(self, X: Inputs, y: np.ndarray, classes: np.ndarray, eval_set: Any) -> None:
        raise TypeError(
            f"an ONNX {self.kind_} head only predicts; fit a {self.kind_} head (prodcat train)"
        )

    def _check_features(self, X: Inputs) -> None:
        for modality, width in self.feature_widths_.items():
            self._check_width(X, modality, width)

    def _logits(self, X: Inputs) -> np.ndarray:
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)), dtype=np.float64)
        feeds: dict[str, np.ndarray] = {
            name: self._features(X, name) for name in self.feature_widths_
        }
        feeds.update({name: getattr(X, attr) for name, attr in MASK_INPUTS.items()})
        parts = []
        for start in range(0, len(X), PREDICT_BATCH):
            end = start + PREDICT_BATCH
            chunk = {k: np.ascontiguousarray(v[start:end]) for k, v in feeds.items()}
            (logits,) = self.session_.run(["logits"], chunk)
            parts.append(np.asarray(logits))
        return np.concatenate(parts).astype(np.float64)

    def _config(self) -> dict[str, Any]:
        return read_config(self.folder_)

    def _weights(self) -> dict[str, np.ndarray]:
        raise TypeError("an ONNX head has no weights of its own to write; save copies its folder")

    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        raise TypeError("open an ONNX head with OnnxHead.from_folder(folder)")

    def save(self, folder: str | Path) -> None:
        """Copy the saved head (config, weights, graph) to `folder`."""
        self._check_fitted("save")
        target = Path(folder)
        if target.resolve() != self.folder_.resolve():
            shutil.copytree(self.folder_, target, dirs_exist_ok=True)


def load_predict_head(folder: str | Path, *, runtime: str = "onnx") -> Head:
    """A saved head for prediction: the ONNX graph where there is one (runtime "onnx"), else the
    head itself (scikit-learn heads need no torch; a torch head saved without a graph does)."""
    from . import head_class, load_head

    if runtime not in ("onnx", "torch"):
        raise ValueError(f"runtime={runtime!r} is not supported; expected 'onnx' or 'torch'")
    if runtime == "onnx" and onnx_path(folder).is_file():
        if head_class(str(read_config(folder).get("name"))).onnx_graph == "part":
            head = load_head(folder)  # a blend: its fusion part runs from the graph
            head.fusion_ = OnnxHead.from_folder(folder)  # type: ignore[attr-defined]
            return head
        return OnnxHead.from_folder(folder)
    return load_head(folder)


def export_head_onnx(head: Head, folder: str | Path) -> Path | None:
    """Write `folder/head.onnx` for heads that run on torch; None for the others."""
    export = getattr(head, "export_onnx", None)
    if type(head).onnx_graph is None or export is None:
        return None
    path: Path = export(onnx_path(folder))
    return path
