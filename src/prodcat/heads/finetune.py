"""Photo + title head that fine-tunes the last EfficientNet-Lite blocks, practical on a CPU.

Fine-tuning the last convolution blocks can beat frozen features (a prototype gained a point),
but running the whole network every epoch is far too slow on two cores. So the network is split
at block `cut`: the frozen trunk (stem + blocks[:cut]) runs once per photo under ONNX Runtime
("effnet-lite0-trunk") and its output, the activations entering block `cut`, goes through the
feature cache like any other features (`Inputs.image_activations`). This head trains only the
tail (blocks[cut:], conv_head, bn1, ReLU6, average pooling; 1.49M weights for lite0 at cut 14)
together with the fusion network of `FusionHead` (image branch = the tail's 1280 pooled values,
text branch = sentence embeddings, presence flags, modality dropout). `export_onnx` writes the
tuned tail + classifier, so serving stays torch-free: trunk ONNX -> this ONNX.

Measured on the bundled sample (lite0, cut 14, 224 px; 80/20 split by id hash, 1,207 training
products of which 10% pick the epoch, 294 test; a shared 2-core machine):
- activations: 192x7x7 float32 = 37,632 bytes per photo (7.35x the 1,280 pooled features); the
  trunk encodes ~50 photos/s, about as fast as the whole network (311M of its 384M
  multiply-adds; the tail is 73M per photo forward).
- one tail epoch over ~1,200 products: 8-11 s with n_threads=1 (validation adds ~0.3 s); the
  classifier warm-up (10 epochs on the frozen features) ~1.3 s in all.
- test accuracy, photo only: frozen features + `ImageHead` 0.854; this head 0.861 with
  random_state=0 (best epoch 3 of 5), 0.871 and 0.857 with 1 and 2 (both kept epoch 0, the
  classifier warm-up on frozen features). Photo + title: `FusionHead` 0.959, this head 0.963
  (epoch 0 again). So on 1,207 training photos the tuned tail does not reliably beat frozen
  features: differences are 1-5 of 294 test photos, and validation (121 products) picks the
  tail epochs only about half the time. Whether tuning pays needs a larger catalogue to tell.

torch is imported lazily (on fit, predict or load), so ``import prodcat.heads`` stays torch-free.
"""

# ruff: noqa: N803, N806  (scikit-learn's names: X for inputs)

from __future__ import annotations

import copy
import functools
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from prodcat.encoders.image import (
    FEATURE_DIM,
    EfficientNetLiteEncoder,
    activation_shape,
    check_size,
)
from prodcat.encoders.weights import check_cut, effnet_spec
from prodcat.progress import report_training

from .base import Head, Inputs, validation_split
from .fusion import (
    class_positions,
    drop_modalities,
    export_logits_onnx,
    network_class,
    standardiser,
    torch_settings,
)

if TYPE_CHECKING:
    import torch

HOLDOUT_FRACTION = 0.1
# The progress bar of the epochs (`prodcat.progress.training_progress`).
EPOCHS_PHASE = "fine-tuning: epochs (0 = warm-up)"
ONNX_INPUTS = ("image_activations", "text", "image_mask", "text_mask")
# Rows per forward pass at prediction: the tail's widest activations (1152 x 7 x 7 floats per
# photo for lite0 at 224 px) make 256 rows about 60 MB, where FusionHead's 4096 would be ~1 GB.
PREDICT_BATCH = 256
MIN_IMAGE_SCALE = 0.01  # see floored_scale


@functools.cache
def network_class_finetune() -> type:
    """The torch module (tail + FusionNet), defined on first use so importing needs no torch."""
    import torch
    from torch import nn

    class FineTuneNet(nn.Module):
        """(image_activations, text, image_mask, text_mask) -> logits.

        `image_features` runs the tail on the photos that are present only (the others get zeros,
        which the fusion network masks out anyway); `forward` runs it on every row so that the
        exported graph has no data-dependent shapes.
        """

        def __init__(self, tail: nn.Module, fusion: nn.Module, shape: tuple[int, int, int]):
            super().__init__()
            self.tail = tail
            self.fusion = fusion
            self.shape = shape

        def maps(self, activations: torch.Tensor) -> torch.Tensor:
            """Flat (n, C*H*W) rows -> (n, C, H, W) maps, channels-last in memory: on CPU the
            tail's convolutions run ~25% faster that way (a no-op in the exported graph)."""
            return activations.reshape(-1, *self.shape).contiguous(
                memory_format=torch.channels_last
            )

        def image_features(self, activations: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
            rows = torch.nonzero(present).flatten()
            pooled = self.tail(self.maps(activations[rows]))
            features = torch.zeros(len(activations), FEATURE_DIM, dtype=pooled.dtype)
            return features.index_copy(0, rows, pooled)

        def forward(
            self,
            image_activations: torch.Tensor,
            text: torch.Tensor,
            image_mask: torch.Tensor,
            text_mask: torch.Tensor,
        ) -> torch.Tensor:
            # where() rather than a product: a NaN in a missing row must not reach the tail.
            safe = torch.where(
                image_mask.unsqueeze(1), image_activations, torch.zeros_like(image_activations)
            )
            pooled = self.tail(self.maps(safe))
            result: torch.Tensor = self.fusion(pooled, text, image_mask, text_mask)
            return result

    return FineTuneNet


def floored_scale(scale: np.ndarray) -> np.ndarray:
    """Raise tiny standard deviations to a floor: a tenth of the median one, and at least 0.01.

    The image branch is standardised with the tail's outputs at init, but the tail then moves:
    a feature nearly dead at init (std 1e-5, against a median of ~0.3 on real photos) would
    multiply any later change, and float rounding (torch vs ONNX Runtime), by 1e5. The features
    are means of ReLU6 outputs, in [0, 6], so 0.01 is small on their own scale; on the sample
    the floor touches 1.5% of them. Constant columns keep their scale of 1.
    """
    varying = scale[scale != 1.0]
    if len(varying) == 0:
        return scale
    floor = max(0.1 * float(np.median(varying)), MIN_IMAGE_SCALE)
    return np.maximum(scale, np.float32(floor)).astype(np.float32)


def freeze_batch_norm(module: torch.nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode: normalise with the pretrained statistics.

    Batches of a few dozen cached activations on a CPU give noisy batch statistics (and 7x7
    maps per photo make them noisier still), which would drift the running statistics away from
    the ImageNet ones the trunk's outputs were made for. The BN scale and shift are still
    trained; only the statistics are frozen.
    """
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


class _Stepper:
    """Shuffled batches and one optimiser step on a batch's logits, shared by both phases."""

    def __init__(
        self, optimiser: Any, label_smoothing: float, target: torch.Tensor, random_state: int
    ) -> None:
        import torch

        self.optimiser = optimiser
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.target = target
        self.generator = torch.Generator().manual_seed(random_state)

    def batches(self, batch_size: int) -> list[torch.Tensor]:
        """A fresh random order of the training rows, cut into batches."""
        import torch

        order = torch.randperm(len(self.target), generator=self.generator)
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

    def __call__(self, logits: torch.Tensor, batch: torch.Tensor) -> float:
        """Backpropagate the batch's loss and step; returns the loss summed over the batch."""
        loss = self.loss_fn(logits, self.target[batch])
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return float(loss.detach()) * len(batch)


class FineTuneHead(Head):
    """Fine-tunes the last EfficientNet-Lite blocks + a fusion MLP on cached trunk activations.

    Parameters:
        encoder: the EfficientNet-Lite variant ("effnet-lite0" or "effnet-lite2").
        cut: the first trained block; `image_activations` must come from the trunk with the same
            encoder, cut and size (``get_encoder(f"{encoder}-trunk", cut=cut, size=size)``).
            14 leaves lite0's last two blocks to train; for lite2 use 19 (and size=260).
        size: the input resolution the trunk ran at.
        proj_dim, hidden_dim, dropout, modality_dropout, label_smoothing: as in `FusionHead`.
        lr: AdamW learning rate of the fusion network (trained from scratch).
        tail_lr: AdamW learning rate of the pretrained tail (smaller: it starts from good
            weights that a large step would wreck).
        weight_decay: AdamW's, for both.
        batch_size: products per step (64: on two cores a step of 64 costs about as much per
            product as it gets; 32 is ~1.5x slower per product, 128 no faster).
        warmup_epochs: epochs of the fusion network alone on the frozen features (the tail's
            outputs before training) before the tail is trained; nearly free. 0 to skip.
        max_epochs, patience: early stopping on the validation score over the tail epochs
            (the best epoch is kept; epoch 0, the warm-up, competes too: when no tail epoch
            beats it on validation, the head keeps the pretrained tail).
        random_state: seeds initialisation, shuffling, dropout, drop connect and the holdout.
        n_threads: torch threads while fitting and predicting (restored afterwards). Results
            do not depend on it. On a machine whose cores are busy with other work, 2 threads
            ran 5x slower than 1 (OpenMP threads spin waiting for each other; exporting
            OMP_WAIT_POLICY=PASSIVE before starting Python removes that).
    """

    name: ClassVar[str] = "fine-tune"
    modalities: ClassVar[tuple[str, ...]] = ("image_activations", "text")

    def __init__(
        self,
        *,
        encoder: str = "effnet-lite0",
        cut: int = 14,
        size: int = 224,
        proj_dim: int = 256,
        hidden_dim: int = 256,
        dropout: float = 0.2,
        modality_dropout: float = 0.25,
        lr: float = 1e-3,
        tail_lr: float = 1e-4,
        weight_decay: float = 1e-2,
        batch_size: int = 64,
        warmup_epochs: int = 10,
        max_epochs: int = 6,
        patience: int = 2,
        label_smoothing: float = 0.1,
        random_state: int = 0,
        n_threads: int = 2,
    ) -> None:
        self.encoder = encoder
        self.cut = cut
        self.size = size
        self.proj_dim = proj_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.modality_dropout = modality_dropout
        self.lr = lr
        self.tail_lr = tail_lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.patience = patience
        self.label_smoothing = label_smoothing
        self.random_state = random_state
        self.n_threads = n_threads

    # -- parameters ------------------------------------------------------------------------
    def _check_params(self) -> tuple[int, int, int]:
        """Validate the parameters; return the (C, H, W) shape of the expected activations."""
        spec = effnet_spec(self.encoder)
        shape = activation_shape(spec, check_size(self.size), check_cut(spec, self.cut))
        for name in ("proj_dim", "hidden_dim", "batch_size", "max_epochs", "patience", "n_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}; expected a positive int")
        warmup = self.warmup_epochs
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"warmup_epochs={warmup!r}; expected an int >= 0")
        ranges = {
            "dropout": (0.0, 1.0),
            "modality_dropout": (0.0, 0.5),
            "label_smoothing": (0.0, 1.0),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{name}={value!r}; expected a number in [{low}, {high}]")
        for name in ("lr", "tail_lr", "weight_decay"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or value < 0
                or (name != "weight_decay" and not value)
            ):
                raise ValueError(f"{name}={value!r}; expected a positive number")
        return shape

    def _check_activation_width(self, X: Inputs, shape: tuple[int, int, int]) -> None:
        """Refuse activations from another trunk, naming the one that fits."""
        width = self._features(X, "image_activations").shape[1]
        expected = int(np.prod(shape))
        if width != expected:
            raise ValueError(
                f"X.image_activations has {width} columns but {self.encoder} cut at block "
                f"{self.cut} at {self.size} px gives {shape[0]}x{shape[1]}x{shape[2]} = "
                f"{expected}; compute them with get_encoder({self.encoder + '-trunk'!r}, "
                f"cut={self.cut}, size={self.size})"
            )

    # -- fitting ---------------------------------------------------------------------------
    def _fit(
        self,
        X: Inputs,
        y: np.ndarray,
        classes: np.ndarray,
        eval_set: tuple[Inputs, np.ndarray] | None,
    ) -> None:
        shape = self._check_params()
        self._check_activation_width(X, shape)
        import torch

        started = time.perf_counter()
        X_fit, y_fit, X_val, y_val, selection = validation_split(
            X, y, eval_set, self.random_state, HOLDOUT_FRACTION
        )
        self.classes_ = classes
        self.activation_shape_ = shape
        self.n_image_activations_features_ = int(np.prod(shape))
        self.n_text_features_ = int(self._features(X, "text").shape[1])
        self.trunk_version_ = EfficientNetLiteEncoder(
            self.encoder, size=self.size, cut=self.cut
        ).version
        with torch_settings(self.n_threads, deterministic=True), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.network_ = self._new_network()
            pooled = self._pooled(X_fit)  # the frozen features: the tail is still pretrained
            self._set_standardisers(X_fit, pooled.numpy())
            history = self._train(X_fit, y_fit, X_val, y_val, pooled)
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
            "best": {"family": "fine-tune", "params": self.get_params(), **best},
            "trials": history,
            "val_accuracy_by_modality": best["val_accuracy_by_modality"],
            "selection_score": "mean validation accuracy over masks as given, photo only and "
            "title only (as FusionHead)",
            "trunk_version": self.trunk_version_,
            "fit_seconds": round(time.perf_counter() - started, 3),
        }

    def _new_network(self) -> Any:
        """Tail with the pretrained weights + a fresh FusionNet over its 1280 pooled values."""
        import torch

        from prodcat.encoders.export import load_effnet_tail

        tail = load_effnet_tail(self.encoder, self.size, self.cut)
        # See FineTuneNet.maps; Module.to(memory_format=...) is missing from torch's stubs.
        tail = tail.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        with warnings.catch_warnings():
            # A photo-only model has a 0-wide text input; torch warns that it has nothing to init.
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            fusion = network_class()(
                FEATURE_DIM,
                self.n_text_features_,
                len(self.classes_),
                self.proj_dim,
                self.hidden_dim,
                float(self.dropout),
            )
        return network_class_finetune()(tail, fusion, self.activation_shape_)

    def _set_standardisers(self, X: Inputs, pooled: np.ndarray) -> None:
        """Standardise the image branch with the pretrained tail's outputs on the training
        photos (fixed afterwards, like the frozen-feature heads), the text branch as FusionHead."""
        import torch

        image_mean, image_scale = standardiser(pooled, X.has_image)
        image_scale = floored_scale(image_scale)
        text_mean, text_scale = standardiser(self._features(X, "text"), X.has_text)
        fusion = self.network_.fusion
        buffers = {
            "image_mean": image_mean,
            "image_scale": image_scale,
            "text_mean": text_mean,
            "text_scale": text_scale,
        }
        for name, value in buffers.items():
            getattr(fusion, name).copy_(torch.from_numpy(value))

    def _tensors(self, X: Inputs) -> tuple[torch.Tensor, ...]:
        import torch

        return (
            torch.from_numpy(self._features(X, "image_activations")),
            torch.from_numpy(self._features(X, "text")),
            torch.from_numpy(X.has_image.copy()),
            torch.from_numpy(X.has_text.copy()),
        )

    def _pooled(self, X: Inputs) -> torch.Tensor:
        """(n, 1280) tail outputs in eval mode (zeros for products without a photo)."""
        import torch

        activations, _, image_mask, _ = self._tensors(X)
        self.network_.eval()
        parts = []
        with torch.no_grad():
            for start in range(0, len(X), PREDICT_BATCH):
                stop = start + PREDICT_BATCH
                parts.append(
                    self.network_.image_features(activations[start:stop], image_mask[start:stop])
                )
        return torch.cat(parts) if parts else torch.zeros(0, FEATURE_DIM)

    def _train(
        self, X: Inputs, y: np.ndarray, X_val: Inputs, y_val: np.ndarray, pooled: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Warm up the classifier on the frozen features, then train tail + classifier; keeps
        the weights of the best validation epoch (epoch 0 = after the warm-up, tail untouched).

        The warm-up costs almost nothing (the tail's outputs at init are computed once and are
        exactly the frozen encoder's features), and it means the few expensive epochs adapt the
        tail to a classifier that already works instead of to random gradients from a fresh one.
        """
        import torch

        net = self.network_
        tensors = self._tensors(X)
        target = torch.from_numpy(np.searchsorted(self.classes_, y.astype(str)).astype(np.int64))
        optimiser = torch.optim.AdamW(
            [
                {"params": net.tail.parameters(), "lr": self.tail_lr},
                {"params": net.fusion.parameters(), "lr": self.lr},
            ],
            weight_decay=self.weight_decay,
        )
        step = _Stepper(optimiser, float(self.label_smoothing), target, self.random_state)
        history: list[dict[str, Any]] = []
        best_state, best_score, stale = copy.deepcopy(net.state_dict()), -1.0, 0
        warmup = self.warmup_epochs
        for epoch in range(0 if warmup else 1, self.max_epochs + 1):
            t0 = time.perf_counter()
            if epoch == 0:
                losses = [self._classifier_epoch(pooled, tensors, step) for _ in range(warmup)]
                loss = float(np.mean(losses))
            else:
                loss = self._tail_epoch(tensors, step)
            train_seconds = time.perf_counter() - t0
            by_modality = self._accuracy_by_modality(X_val, y_val)
            score = float(np.mean([v for v in by_modality.values() if v is not None]))
            history.append(
                {
                    "epoch": epoch,
                    "phase": "classifier warm-up" if epoch == 0 else "tail + classifier",
                    "train_loss": round(loss, 5),
                    "val_score": score,
                    "val_accuracy": by_modality["as_given"],
                    "val_accuracy_by_modality": by_modality,
                    "train_seconds": round(train_seconds, 3),
                    "seconds": round(time.perf_counter() - t0, 3),
                }
            )
            report_training(EPOCHS_PHASE, epoch, self.max_epochs)
            if score > best_score:
                best_state, best_score, stale = copy.deepcopy(net.state_dict()), score, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        report_training(EPOCHS_PHASE, self.max_epochs, self.max_epochs)
        net.load_state_dict(best_state)
        net.eval()
        return history

    def _classifier_epoch(
        self, pooled: torch.Tensor, tensors: tuple[torch.Tensor, ...], step: _Stepper
    ) -> float:
        """One epoch of the fusion network alone on fixed image features; mean training loss."""
        _, text, image_mask, text_mask = tensors
        self.network_.fusion.train()
        total = 0.0
        for batch in step.batches(self.batch_size):
            im, tm = drop_modalities(
                image_mask[batch], text_mask[batch], float(self.modality_dropout), step.generator
            )
            total += step(self.network_.fusion(pooled[batch], text[batch], im, tm), batch)
        return total / max(len(step.target), 1)

    def _tail_epoch(self, tensors: tuple[torch.Tensor, ...], step: _Stepper) -> float:
        """One epoch of tail + fusion network on the cached activations; mean training loss."""
        activations, text, image_mask, text_mask = tensors
        net = self.network_
        net.train()
        freeze_batch_norm(net.tail)  # drop connect and dropout stay on; see the docstring
        total = 0.0
        for batch in step.batches(self.batch_size):
            im, tm = drop_modalities(
                image_mask[batch], text_mask[batch], float(self.modality_dropout), step.generator
            )
            pooled = net.image_features(activations[batch], im)
            total += step(net.fusion(pooled, text[batch], im, tm), batch)
        return total / max(len(step.target), 1)

    def _accuracy_by_modality(self, X: Inputs, y: np.ndarray) -> dict[str, float | None]:
        """Validation accuracy with the masks as given, photo only and title only.

        The tail runs once per epoch over the validation photos; the three mask variants only
        re-run the small fusion network. None where no product has the modality.
        """
        import torch

        true = class_positions(self.classes_, y)
        pooled = self._pooled(X)
        _, text, image_mask, text_mask = self._tensors(X)
        off = torch.zeros(len(X), dtype=torch.bool)
        variants = {
            "as_given": (image_mask, text_mask, np.ones(len(X), dtype=bool)),
            "image_only": (image_mask, off, X.has_image),
            "text_only": (off, text_mask, X.has_text),
        }
        out: dict[str, float | None] = {}
        with torch.no_grad():
            for name, (im, tm, counted) in variants.items():
                if not counted.any():
                    out[name] = None
                    continue
                predicted = self.network_.fusion(pooled, text, im, tm).argmax(dim=1).numpy()
                out[name] = float(np.mean(predicted[counted] == true[counted]))
        return out

    # -- predicting ------------------------------------------------------------------------
    def _raw_logits(self, X: Inputs) -> np.ndarray:
        """float32 logits in eval mode, in batches (the torch path; serving uses export_onnx)."""
        import torch

        tensors = self._tensors(X)
        out = []
        self.network_.eval()
        with torch_settings(self.n_threads, deterministic=False), torch.no_grad():
            for start in range(0, len(X), PREDICT_BATCH):
                activations, text, image_mask, text_mask = (
                    t[start : start + PREDICT_BATCH] for t in tensors
                )
                pooled = self.network_.image_features(activations, image_mask)
                out.append(self.network_.fusion(pooled, text, image_mask, text_mask).numpy())
        if not out:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return np.concatenate(out)

    def _logits(self, X: Inputs) -> np.ndarray:
        return self._raw_logits(X).astype(np.float64)

    # -- persistence -----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "n_image_activations_features": self.n_image_activations_features_,
            "activation_shape": list(self.activation_shape_),
            "n_text_features": self.n_text_features_,
            "best_epoch": self.best_epoch_,
            "trunk_encoder": f"{self.encoder}-trunk",
            "trunk_version": self.trunk_version_,
        }

    def _weights(self) -> dict[str, np.ndarray]:
        """The tail ("tail.*", BatchNorm statistics included) and fusion ("fusion.*") weights."""
        return {k: v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()}

    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        import torch

        self.activation_shape_ = self._check_params()
        saved_shape = tuple(int(v) for v in config["activation_shape"])
        if saved_shape != self.activation_shape_:
            raise ValueError(
                f"the saved head expects activations of shape {saved_shape} but its parameters "
                f"give {self.activation_shape_}; the folder was edited or written by another "
                "version of prodcat"
            )
        self.n_image_activations_features_ = int(config["n_image_activations_features"])
        self.n_text_features_ = int(config["n_text_features"])
        self.best_epoch_ = int(config["best_epoch"])
        self.trunk_version_ = str(config["trunk_version"])
        self.network_ = self._new_network()
        self.network_.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        self.network_.eval()

    def export_onnx(self, path: str | Path) -> Path:
        """Write tail + classifier as ONNX: inputs image_activations (N, C*H*W) and text
        (float32), image_mask and text_mask (bool); output logits (float32); any batch size.

        Serving runs the trunk encoder ("<encoder>-trunk", same cut and size; its version is in
        config.json as trunk_version) and then this file, both under ONNX Runtime.
        """
        self._check_fitted("export_onnx")
        widths = (self.n_image_activations_features_, self.n_text_features_)
        return export_logits_onnx(self.network_, widths, path, ONNX_INPUTS)
