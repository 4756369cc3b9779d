"""The one training loop of prodcat's torch networks: the fusion and fine-tune heads, and the
whole-network tuning of the photo encoder (`prodcat.training.whole_network`).

The pieces: `seeded` (thread count, deterministic algorithms and a private seeded RNG for a
block), `Stepper` (one optimiser step on a batch's loss), `train_epochs` (epochs with early
stopping on a validation score, keeping the best epoch's weights), `freeze_batch_norm`, the
standardiser and modality dropout of the fusion networks, the parameter checks, and `TorchHead`:
what the two torch heads share (their fit, the training report, batched raw logits, saving,
ONNX export), so that each keeps only its network and how an epoch feeds it.

torch is imported inside the functions: importing this module (or ``prodcat.heads``) does not.
"""

# ruff: noqa: N803, N806  (scikit-learn's names: X for inputs)

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from prodcat.progress import report_training

from .base import Head, class_positions, validation_split
from .inputs import Inputs

if TYPE_CHECKING:
    import torch

ONNX_OPSET = 17
# The hyperparameters every torch head checks the same way.
NETWORK_INTS = ("proj_dim", "hidden_dim", "batch_size", "max_epochs", "patience", "n_threads")
NETWORK_RANGES = {
    "dropout": (0.0, 1.0),
    "modality_dropout": (0.0, 0.5),
    "label_smoothing": (0.0, 1.0),
}


# -- settings and seeding ----------------------------------------------------------------------
@contextlib.contextmanager
def torch_settings(n_threads: int, deterministic: bool) -> Iterator[None]:
    """Set torch's thread count (and deterministic algorithms) for a block, then restore them."""
    import torch

    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(n_threads)
    torch.use_deterministic_algorithms(deterministic or was_deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


@contextlib.contextmanager
def seeded(seed: int, n_threads: int, *, deterministic: bool = True) -> Iterator[None]:
    """`torch_settings` plus torch's RNG seeded with `seed` for the block: a training draws the
    same numbers whatever ran before it, and leaves the global RNG as it found it."""
    import torch

    with torch_settings(n_threads, deterministic), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# -- the loop ------------------------------------------------------------------------------------
class Stepper:
    """One optimiser (and learning-rate schedule) step on the loss of a batch's logits."""

    def __init__(
        self,
        optimiser: Any,
        target: torch.Tensor,
        *,
        label_smoothing: float,
        scheduler: Any = None,
    ) -> None:
        import torch

        self.optimiser = optimiser
        self.scheduler = scheduler
        self.target = target
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(self, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss against ``target[batch]`` (a subclass may add terms)."""
        return self.loss_fn(logits, self.target[batch])

    def __call__(self, logits: torch.Tensor, batch: torch.Tensor) -> float:
        """Backpropagate `loss` and step; returns the loss summed over the batch."""
        loss = self.loss(logits, batch)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach()) * len(batch)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A fresh random order of `n` rows, cut into batches."""
    import torch

    order = torch.randperm(n, generator=generator)
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


def train_epochs(
    network: torch.nn.Module,
    epochs: Iterable[int],
    run_epoch: Callable[[int], dict[str, Any]],
    *,
    score: str,
    patience: int | None = None,
    phase: str | None = None,
    last_epoch: int = 0,
) -> list[dict[str, Any]]:
    """Run `run_epoch(epoch)` for each of `epochs`; it trains and returns the epoch's history
    entry, whose `score` key is the validation score (higher is better).

    Keeps the weights of the best epoch (the first of equals) and restores them at the end, in
    eval mode; stops after `patience` epochs in a row without a better score (None: never). With
    a `phase`, each epoch moves that progress bar (`prodcat.progress.report_training`) towards
    `last_epoch`, and the bar ends full.
    """
    history: list[dict[str, Any]] = []
    best_state, best_score, stale = copy.deepcopy(network.state_dict()), -1.0, 0
    for epoch in epochs:
        entry = run_epoch(epoch)
        history.append(entry)
        if phase is not None:
            report_training(phase, epoch, last_epoch)
        if entry[score] > best_score:
            best_state, best_score, stale = copy.deepcopy(network.state_dict()), entry[score], 0
        else:
            stale += 1
            if patience is not None and stale >= patience:
                break
    if phase is not None:
        report_training(phase, last_epoch, last_epoch)
    network.load_state_dict(best_state)
    network.eval()
    return history


def freeze_batch_norm(module: torch.nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode: normalise with the pretrained statistics.

    Batches of a few dozen photos (or cached activations) on a CPU give noisy batch statistics
    (and 7x7 maps per photo make them noisier still), which would drift the running statistics
    away from the ImageNet ones the network was trained with. The BN scale and shift are still
    trained; only the statistics are frozen.
    """
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


# -- the fusion networks' inputs -----------------------------------------------------------------
def standardiser(features: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean, std) over the rows that have the modality; constant columns get scale 1."""
    rows = features[present].astype(np.float64)
    if len(rows) == 0:
        return np.zeros(features.shape[1], np.float32), np.ones(features.shape[1], np.float32)
    std = rows.std(axis=0)
    std[std < 1e-6] = 1.0
    return rows.mean(axis=0).astype(np.float32), std.astype(np.float32)


def set_standardisers(
    network: torch.nn.Module,
    image: tuple[np.ndarray, np.ndarray],
    text: tuple[np.ndarray, np.ndarray],
) -> None:
    """Copy (mean, scale) pairs into a fusion network's image_/text_ mean and scale buffers."""
    import torch

    for prefix, (mean, scale) in (("image", image), ("text", text)):
        getattr(network, f"{prefix}_mean").copy_(torch.from_numpy(mean))
        getattr(network, f"{prefix}_scale").copy_(torch.from_numpy(scale))


def drop_modalities(
    image_mask: torch.Tensor, text_mask: torch.Tensor, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Modality dropout: hide the photo (prob p) or the title (prob p) of products with both."""
    import torch

    both = image_mask & text_mask
    u = torch.rand(len(image_mask), generator=generator)
    drop_image = both & (u < p)
    drop_text = both & (u >= p) & (u < 2 * p)
    return image_mask & ~drop_image, text_mask & ~drop_text


def accuracy_by_modality(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    true: np.ndarray,
    has_image: np.ndarray,
    has_text: np.ndarray,
) -> dict[str, float | None]:
    """Accuracy with the masks as given, photo only and title only.

    `predict(image_mask, text_mask)` gives the predicted class positions of every product with
    those masks. Photo only / title only force the other mask off and count the products that
    have that modality; None when there are none.
    """
    off = np.zeros(len(true), dtype=bool)
    variants = {
        "as_given": (has_image, has_text, np.ones(len(true), dtype=bool)),
        "image_only": (has_image, off, has_image),
        "text_only": (off, has_text, has_text),
    }
    out: dict[str, float | None] = {}
    for name, (image_mask, text_mask, counted) in variants.items():
        if not counted.any():
            out[name] = None
            continue
        out[name] = float(np.mean(predict(image_mask, text_mask)[counted] == true[counted]))
    return out


# -- parameters ----------------------------------------------------------------------------------
def check_params(
    owner: object,
    *,
    positive_ints: Sequence[str] = NETWORK_INTS,
    ranges: Mapping[str, tuple[float, float]] = NETWORK_RANGES,
    rates: Sequence[str] = ("lr",),
    decays: Sequence[str] = ("weight_decay",),
) -> None:
    """Refuse hyperparameters of `owner` out of range, naming the parameter and what fits:
    `positive_ints` >= 1, `ranges` within [low, high], learning `rates` > 0, `decays` >= 0."""
    for name in positive_ints:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}; expected a positive int")
    for name, (low, high) in ranges.items():
        value = getattr(owner, name)
        if not isinstance(value, int | float) or not low <= value <= high:
            raise ValueError(f"{name}={value!r}; expected a number in [{low}, {high}]")
    for name in (*rates, *decays):
        value = getattr(owner, name)
        if not isinstance(value, int | float) or value < 0 or (name in rates and not value):
            raise ValueError(f"{name}={value!r}; expected a positive number")


# -- ONNX ----------------------------------------------------------------------------------------
def export_logits_onnx(
    network: torch.nn.Module,
    widths: tuple[int, int],
    path: str | Path,
    input_names: tuple[str, ...],
) -> Path:
    """ONNX of a (features, text, image_mask, text_mask) -> logits network, any batch size."""
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    example = (
        torch.zeros(2, widths[0]),
        torch.zeros(2, widths[1]),
        torch.tensor([True, False]),
        torch.tensor([True, True]),
    )
    network.eval()
    batch_axis = {name: {0: "batch"} for name in (*input_names, "logits")}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is the legacy path; the new one needs
        # onnxscript, which prodcat does not depend on.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network,
            example,
            str(target),
            input_names=list(input_names),
            output_names=["logits"],
            dynamic_axes=batch_axis,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return target


# -- the torch heads -----------------------------------------------------------------------------
class TorchHead(Head):
    """What `FusionHead` and `FineTuneHead` share: a network over (photo input, title
    embedding, photo mask, title mask), trained by AdamW epochs with modality dropout and early
    stopping on the mean validation accuracy over masks as given, photo only and title only.

    A subclass sets `modalities` (its photo input, then "text"), `family`, `epochs_phase`,
    `predict_batch` and `selection_score`, and implements `_check_fit` (parameters and inputs;
    sets the fitted widths), `_new_network`, `_prepare` (standardisers), `_optimiser`, `_epoch`
    and `_predict_positions`.
    Its parameters include random_state, n_threads, batch_size, max_epochs, patience,
    modality_dropout and label_smoothing.
    """

    family: ClassVar[str]
    epochs_phase: ClassVar[str]  # the progress bar of the epochs
    predict_batch: ClassVar[int]
    selection_score: ClassVar[str]
    network_: Any
    best_epoch_: int
    n_text_features_: int
    random_state: int
    n_threads: int
    batch_size: int
    max_epochs: int
    patience: int
    modality_dropout: float
    label_smoothing: float

    # -- fitting ---------------------------------------------------------------------------
    def _fit(
        self,
        X: Inputs,
        y: np.ndarray,
        classes: np.ndarray,
        eval_set: tuple[Inputs, np.ndarray] | None,
    ) -> None:
        self._check_fit(X)
        started = time.perf_counter()
        X_fit, y_fit, X_val, y_val, selection = validation_split(X, y, eval_set, self.random_state)
        self.classes_ = classes
        with seeded(self.random_state, self.n_threads):
            self.network_ = self._new_network()
            prepared = self._prepare(X_fit)
            history = self._train(X_fit, y_fit, X_val, y_val, prepared)
        best = max(history, key=lambda h: h["val_score"])
        self.best_epoch_ = int(best["epoch"])
        self.validation_report_ = {
            "head": self.name,
            "selection": selection,
            "metric": "accuracy",
            "n_train": len(y_fit),
            "n_validation": len(y_val),
            "epochs_run": sum(h["epoch"] > 0 for h in history),
            "best_epoch": self.best_epoch_,
            "best": {"family": self.family, "params": self.get_params(), **best},
            "trials": history,
            "val_accuracy_by_modality": best["val_accuracy_by_modality"],
            "selection_score": self.selection_score,
            **self._report_extras(),
            "fit_seconds": round(time.perf_counter() - started, 3),
        }

    def _train(
        self, X: Inputs, y: np.ndarray, X_val: Inputs, y_val: np.ndarray, prepared: Any
    ) -> list[dict[str, Any]]:
        """The epochs (`_epochs`), each followed by validation; keeps the best epoch's weights."""
        import torch

        tensors = self._tensors(X)
        target = torch.from_numpy(np.searchsorted(self.classes_, y.astype(str)).astype(np.int64))
        optimiser, scheduler = self._optimiser(len(target))
        step = Stepper(
            optimiser, target, label_smoothing=float(self.label_smoothing), scheduler=scheduler
        )
        generator = torch.Generator().manual_seed(self.random_state)
        true = class_positions(self.classes_, y_val)

        def run(epoch: int) -> dict[str, Any]:
            started = time.perf_counter()
            loss = self._epoch(epoch, tensors, step, generator, prepared)
            train_seconds = time.perf_counter() - started
            by_modality = accuracy_by_modality(
                self._predict_positions(X_val), true, X_val.has_image, X_val.has_text
            )
            return {
                "epoch": epoch,
                **self._history_extras(epoch, train_seconds),
                "train_loss": round(loss, 5),
                "val_score": float(np.mean([v for v in by_modality.values() if v is not None])),
                "val_accuracy": by_modality["as_given"],
                "val_accuracy_by_modality": by_modality,
                "seconds": round(time.perf_counter() - started, 3),
            }

        return train_epochs(
            self.network_,
            self._epochs(),
            run,
            score="val_score",
            patience=self.patience,
            phase=self.epochs_phase,
            last_epoch=self.max_epochs,
        )

    def _tensors(self, X: Inputs) -> tuple[torch.Tensor, ...]:
        """(photo input, text features, image mask, text mask) as tensors (the features share
        X's memory)."""
        import torch

        return (
            *(torch.from_numpy(self._features(X, modality)) for modality in self.modalities),
            torch.from_numpy(X.has_image.copy()),
            torch.from_numpy(X.has_text.copy()),
        )

    def _epochs(self) -> Iterable[int]:
        return range(1, self.max_epochs + 1)

    def _history_extras(self, epoch: int, train_seconds: float) -> dict[str, Any]:
        """Keys a head adds to each epoch's history entry."""
        return {}

    def _report_extras(self) -> dict[str, Any]:
        """Keys a head adds to its validation report."""
        return {}

    @abstractmethod
    def _check_fit(self, X: Inputs) -> None:
        """Validate the parameters and training inputs; set the fitted feature widths."""

    @abstractmethod
    def _new_network(self) -> Any:
        """The network, freshly initialised (from the fitted widths and classes)."""

    @abstractmethod
    def _prepare(self, X: Inputs) -> Any:
        """Set the network's standardisers from the training inputs; return what `_epoch`
        needs besides the tensors (or None)."""

    @abstractmethod
    def _optimiser(self, n_rows: int) -> tuple[Any, Any]:
        """(AdamW optimiser, learning-rate scheduler or None) for `n_rows` training rows."""

    @abstractmethod
    def _epoch(
        self,
        epoch: int,
        tensors: tuple[torch.Tensor, ...],
        step: Stepper,
        generator: torch.Generator,
        prepared: Any,
    ) -> float:
        """Train one epoch (batches from `shuffled_batches` with `generator`); the mean loss."""

    @abstractmethod
    def _predict_positions(self, X: Inputs) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """predict(image_mask, text_mask) -> class positions of X's products with those masks
        (during training: the network in eval mode, no gradients)."""

    # -- predicting ------------------------------------------------------------------------
    def _raw_logits(self, X: Inputs) -> np.ndarray:
        """float32 logits of the network in eval mode, in batches of `predict_batch` rows."""
        import torch

        tensors = self._tensors(X)
        out = []
        self.network_.eval()
        with torch_settings(self.n_threads, deterministic=False), torch.no_grad():
            for start in range(0, len(X), self.predict_batch):
                part = [t[start : start + self.predict_batch] for t in tensors]
                out.append(self._forward(*part).numpy())
        if not out:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return np.concatenate(out)

    def _forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of (photo input, text, image mask, text mask)."""
        result: torch.Tensor = self.network_(*tensors)
        return result

    def _logits(self, X: Inputs) -> np.ndarray:
        return self._raw_logits(X).astype(np.float64)

    # -- persistence -----------------------------------------------------------------------
    def _weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()}

    def _load_network(self, weights: dict[str, np.ndarray]) -> None:
        """Rebuild the network (widths and classes already restored) with the saved weights."""
        import torch

        self.network_ = self._new_network()
        self.network_.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        self.network_.eval()

    def export_onnx(self, path: str | Path) -> Path:
        """Write the network as ONNX: inputs ``modalities`` (float32; (N, width)), image_mask and
        text_mask (bool); output logits (float32); any batch size. Serving then needs only
        onnxruntime."""
        self._check_fitted("export_onnx")
        photo, text = self.modalities
        widths = (getattr(self, f"n_{photo}_features_"), getattr(self, f"n_{text}_features_"))
        names = (photo, text, "image_mask", "text_mask")
        return export_logits_onnx(self.network_, widths, path, names)
