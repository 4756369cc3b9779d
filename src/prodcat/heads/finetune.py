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

The training loop, prediction, saving and ONNX export are `TorchHead`'s (`torch_training`, shared
with `FusionHead`); this file holds the network, the warm-up and the tail epochs. torch is imported
lazily (on fit, predict or load), so ``import prodcat.heads`` stays torch-free.
"""

# ruff: noqa: N803  (scikit-learn's names: X for inputs)

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from prodcat.encoders.image import (
    FEATURE_DIM,
    EfficientNetLiteEncoder,
    activation_shape,
    check_size,
)
from prodcat.encoders.weights import check_cut, effnet_spec

from .fusion import network_class
from .inputs import Inputs
from .torch_training import (
    Stepper,
    TorchHead,
    check_params,
    drop_modalities,
    freeze_batch_norm,
    set_standardisers,
    shuffled_batches,
    standardiser,
)

if TYPE_CHECKING:
    import torch

# The progress bar of the epochs (`prodcat.progress.training_progress`).
EPOCHS_PHASE = "fine-tuning: epochs (0 = warm-up)"
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


class FineTuneHead(TorchHead):
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
    default_text_encoder: ClassVar[str | None] = "minilm"
    onnx_graph: ClassVar[str | None] = "graph"
    family: ClassVar[str] = "fine-tune"
    epochs_phase: ClassVar[str] = EPOCHS_PHASE
    predict_batch: ClassVar[int] = PREDICT_BATCH
    selection_score: ClassVar[str] = (
        "mean validation accuracy over masks as given, photo only and title only (as FusionHead)"
    )

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
        """The last blocks of `image_encoder`'s network at `image_size`, cut where its spec says."""
        del text_encoder, text_families
        spec = effnet_spec(image_encoder)
        return cls(
            encoder=image_encoder,
            cut=spec.default_cut,
            size=image_size or spec.native_size,
            random_state=seed,
        )

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
        check_params(self, rates=("lr", "tail_lr"))
        warmup = self.warmup_epochs
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"warmup_epochs={warmup!r}; expected an int >= 0")
        return shape

    def _check_fit(self, X: Inputs) -> None:
        """Parameters, and activations from the trunk that fits them (naming it when not)."""
        shape = self._check_params()
        width = self._features(X, "image_activations").shape[1]
        expected = int(np.prod(shape))
        if width != expected:
            raise ValueError(
                f"X.image_activations has {width} columns but {self.encoder} cut at block "
                f"{self.cut} at {self.size} px gives {shape[0]}x{shape[1]}x{shape[2]} = "
                f"{expected}; compute them with get_encoder({self.encoder + '-trunk'!r}, "
                f"cut={self.cut}, size={self.size})"
            )
        self.activation_shape_ = shape
        self.n_image_activations_features_ = expected
        self.n_text_features_ = int(self._features(X, "text").shape[1])
        self.trunk_version_ = EfficientNetLiteEncoder(
            self.encoder, size=self.size, cut=self.cut
        ).version

    # -- fitting ---------------------------------------------------------------------------
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

    def _prepare(self, X: Inputs) -> torch.Tensor:
        """Standardise the image branch with the pretrained tail's outputs on the training
        photos (fixed afterwards, like the frozen-feature heads), the text branch as FusionHead.
        Returns those outputs: the frozen features the warm-up trains on."""
        pooled = self._pooled(X)
        image_mean, image_scale = standardiser(pooled.numpy(), X.has_image)
        set_standardisers(
            self.network_.fusion,
            image=(image_mean, floored_scale(image_scale)),
            text=standardiser(self._features(X, "text"), X.has_text),
        )
        return pooled

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

    def _optimiser(self, n_rows: int) -> tuple[Any, Any]:
        import torch

        groups = [
            {"params": self.network_.tail.parameters(), "lr": self.tail_lr},
            {"params": self.network_.fusion.parameters(), "lr": self.lr},
        ]
        return torch.optim.AdamW(groups, weight_decay=self.weight_decay), None

    def _epochs(self) -> Iterable[int]:
        """Epoch 0 (when warmup_epochs > 0) warms up the classifier on the frozen features, then
        tail + classifier train; epoch 0 competes for the best epoch too (tail untouched).

        The warm-up costs almost nothing (the tail's outputs at init are computed once and are
        exactly the frozen encoder's features), and it means the few expensive epochs adapt the
        tail to a classifier that already works instead of to random gradients from a fresh one.
        """
        return range(0 if self.warmup_epochs else 1, self.max_epochs + 1)

    def _epoch(
        self,
        epoch: int,
        tensors: tuple[torch.Tensor, ...],
        step: Stepper,
        generator: torch.Generator,
        prepared: Any,
    ) -> float:
        if epoch == 0:
            losses = [
                self._classifier_epoch(prepared, tensors, step, generator)
                for _ in range(self.warmup_epochs)
            ]
            return float(np.mean(losses))
        return self._tail_epoch(tensors, step, generator)

    def _history_extras(self, epoch: int, train_seconds: float) -> dict[str, Any]:
        return {
            "phase": "classifier warm-up" if epoch == 0 else "tail + classifier",
            "train_seconds": round(train_seconds, 3),
        }

    def _report_extras(self) -> dict[str, Any]:
        return {"trunk_version": self.trunk_version_}

    def _classifier_epoch(
        self,
        pooled: torch.Tensor,
        tensors: tuple[torch.Tensor, ...],
        step: Stepper,
        generator: torch.Generator,
    ) -> float:
        """One epoch of the fusion network alone on fixed image features; mean training loss."""
        _, text, image_mask, text_mask = tensors
        self.network_.fusion.train()
        total = 0.0
        for batch in shuffled_batches(len(step.target), self.batch_size, generator):
            im, tm = drop_modalities(
                image_mask[batch], text_mask[batch], float(self.modality_dropout), generator
            )
            total += step(self.network_.fusion(pooled[batch], text[batch], im, tm), batch)
        return total / max(len(step.target), 1)

    def _tail_epoch(
        self, tensors: tuple[torch.Tensor, ...], step: Stepper, generator: torch.Generator
    ) -> float:
        """One epoch of tail + fusion network on the cached activations; mean training loss."""
        activations, text, image_mask, text_mask = tensors
        net = self.network_
        net.train()
        freeze_batch_norm(net.tail)  # drop connect and dropout stay on; see freeze_batch_norm
        total = 0.0
        for batch in shuffled_batches(len(step.target), self.batch_size, generator):
            im, tm = drop_modalities(
                image_mask[batch], text_mask[batch], float(self.modality_dropout), generator
            )
            pooled = net.image_features(activations[batch], im)
            total += step(net.fusion(pooled, text[batch], im, tm), batch)
        return total / max(len(step.target), 1)

    def _predict_positions(self, X: Inputs) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """The tail runs once per epoch over the validation photos; the mask variants only
        re-run the small fusion network."""
        import torch

        pooled = self._pooled(X)
        text = torch.from_numpy(self._features(X, "text"))

        def predict(image_mask: np.ndarray, text_mask: np.ndarray) -> np.ndarray:
            im, tm = torch.from_numpy(image_mask.copy()), torch.from_numpy(text_mask.copy())
            with torch.no_grad():
                logits = self.network_.fusion(pooled, text, im, tm)
            positions: np.ndarray = logits.argmax(dim=1).numpy()
            return positions

        return predict

    # -- predicting ------------------------------------------------------------------------
    def _forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The tail on the present photos only, then the fusion network (serving runs the
        exported graph, which runs the tail on every row: no data-dependent shapes)."""
        activations, text, image_mask, text_mask = tensors
        pooled = self.network_.image_features(activations, image_mask)
        result: torch.Tensor = self.network_.fusion(pooled, text, image_mask, text_mask)
        return result

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

    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
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
        self._load_network(weights)
