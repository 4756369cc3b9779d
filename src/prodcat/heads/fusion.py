"""Photo + title head: a small PyTorch network over both frozen embeddings.

Each modality is standardised and projected (Linear -> LayerNorm -> GELU -> Dropout); the two
projections, zeroed where the modality is missing, are concatenated with the two presence flags
and classified by an MLP. Modality dropout hides the photo or the title of random training
products, so the same network serves products that only have one of them; at inference the masks
of `Inputs` say what is missing.

The training loop, prediction, saving and ONNX export are `TorchHead`'s (shared with the fine-tune
head, in `torch_training`); this file holds the network and how an epoch feeds it. torch is
imported lazily (on fit, predict or load), so ``import prodcat.heads`` stays torch-free;
`FusionHead.export_onnx` writes a model ONNX Runtime serves without torch.
"""

# ruff: noqa: N803  (scikit-learn's names: X for inputs, C/Cs for inverse regularisation)

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .inputs import Inputs
from .torch_training import (
    Stepper,
    TorchHead,
    check_params,
    drop_modalities,
    set_standardisers,
    shuffled_batches,
    standardiser,
)

if TYPE_CHECKING:
    import torch

# The progress bar of the epochs (`prodcat.progress.training_progress`).
EPOCHS_PHASE = "fusion network: epochs"
PREDICT_BATCH = 4096
SCHEDULES = ("one-cycle", "constant")


@functools.cache
def network_class() -> type:
    """The torch module class, defined on first use so that importing this file needs no torch."""
    import torch
    from torch import nn

    class FusionNet(nn.Module):
        """(image, text, image_mask, text_mask) -> logits; see the module docstring."""

        image_mean: torch.Tensor
        image_scale: torch.Tensor
        text_mean: torch.Tensor
        text_scale: torch.Tensor

        def __init__(
            self,
            d_image: int,
            d_text: int,
            n_classes: int,
            proj_dim: int,
            hidden_dim: int,
            dropout: float,
        ) -> None:
            super().__init__()
            self.register_buffer("image_mean", torch.zeros(d_image))
            self.register_buffer("image_scale", torch.ones(d_image))
            self.register_buffer("text_mean", torch.zeros(d_text))
            self.register_buffer("text_scale", torch.ones(d_text))
            self.image_proj = self._branch(d_image, proj_dim, dropout)
            self.text_proj = self._branch(d_text, proj_dim, dropout)
            self.classifier = nn.Sequential(
                nn.Linear(2 * proj_dim + 2, hidden_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, n_classes),
            )

        @staticmethod
        def _branch(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.GELU(), nn.Dropout(dropout)
            )

        def forward(
            self,
            image: torch.Tensor,
            text: torch.Tensor,
            image_mask: torch.Tensor,
            text_mask: torch.Tensor,
        ) -> torch.Tensor:
            im = image_mask.to(image.dtype).unsqueeze(1)
            tm = text_mask.to(text.dtype).unsqueeze(1)
            # where() rather than a product: a NaN in a missing row must not leak through.
            image = torch.where(image_mask.unsqueeze(1), image, torch.zeros_like(image))
            text = torch.where(text_mask.unsqueeze(1), text, torch.zeros_like(text))
            hi = self.image_proj((image - self.image_mean) / self.image_scale) * im
            ht = self.text_proj((text - self.text_mean) / self.text_scale) * tm
            return self.classifier(torch.cat([hi, ht, im, tm], dim=1))

    return FusionNet


class FusionHead(TorchHead):
    """Photo + title embeddings, fused by a small MLP trained with modality dropout.

    Parameters:
        proj_dim: width of each modality's projection.
        hidden_dim: width of the fused hidden layer.
        dropout: dropout after the projections and the hidden layer.
        modality_dropout: per training product with both modalities, the probability that the
            photo is hidden, and (separately) that the title is hidden; at most 0.5.
        lr, weight_decay: AdamW settings; `lr` is the peak of the one-cycle schedule.
        schedule: "one-cycle" (warm up, then anneal to ~0 over `max_epochs`: on T10 it reached
            a better validation accuracy in 15 epochs than a constant rate in 40) or "constant".
        batch_size: products per step.
        max_epochs, patience: early stopping on validation accuracy (the best epoch is kept).
        label_smoothing: of the cross-entropy.
        random_state: seeds initialisation, shuffling, dropout and the holdout.
        n_threads: torch threads while fitting and predicting (restored afterwards).
    """

    name: ClassVar[str] = "fusion"
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    default_text_encoder: ClassVar[str | None] = "minilm"
    onnx_graph: ClassVar[str | None] = "graph"
    family: ClassVar[str] = "fusion-mlp"
    epochs_phase: ClassVar[str] = EPOCHS_PHASE
    predict_batch: ClassVar[int] = PREDICT_BATCH
    selection_score: ClassVar[str] = (
        "mean validation accuracy over masks as given, photo only and title only: early "
        "stopping on full inputs alone stops before the title branch has learnt (the photo "
        "branch saturates first)"
    )

    def __init__(
        self,
        *,
        proj_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.2,
        modality_dropout: float = 0.25,
        lr: float = 1e-3,
        schedule: str = "one-cycle",
        weight_decay: float = 1e-2,
        batch_size: int = 256,
        max_epochs: int = 15,
        patience: int = 5,
        label_smoothing: float = 0.1,
        random_state: int = 0,
        n_threads: int = 2,
    ) -> None:
        self.proj_dim = proj_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.modality_dropout = modality_dropout
        self.lr = lr
        self.schedule = schedule
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.label_smoothing = label_smoothing
        self.random_state = random_state
        self.n_threads = n_threads

    # -- fitting ---------------------------------------------------------------------------
    def _check_fit(self, X: Inputs) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; expected one of {SCHEDULES}")
        check_params(self)
        self.n_image_features_ = int(self._features(X, "image").shape[1])
        self.n_text_features_ = int(self._features(X, "text").shape[1])

    def _new_network(self) -> Any:
        return network_class()(
            self.n_image_features_,
            self.n_text_features_,
            len(self.classes_),
            self.proj_dim,
            self.hidden_dim,
            float(self.dropout),
        )

    def _prepare(self, X: Inputs) -> None:
        set_standardisers(
            self.network_,
            image=standardiser(self._features(X, "image"), X.has_image),
            text=standardiser(self._features(X, "text"), X.has_text),
        )

    def _optimiser(self, n_rows: int) -> tuple[Any, Any]:
        import torch

        optimiser = torch.optim.AdamW(
            self.network_.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        if self.schedule != "one-cycle":
            return optimiser, None
        steps_per_epoch = -(-n_rows // self.batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=self.lr, total_steps=self.max_epochs * steps_per_epoch
        )
        return optimiser, scheduler

    def _epoch(
        self,
        epoch: int,
        tensors: tuple[torch.Tensor, ...],
        step: Stepper,
        generator: torch.Generator,
        prepared: Any,
    ) -> float:
        """One epoch of AdamW steps with modality dropout; the mean training loss."""
        image, text, image_mask, text_mask = tensors
        self.network_.train()
        total = 0.0
        for batch in shuffled_batches(len(step.target), self.batch_size, generator):
            im, tm = drop_modalities(
                image_mask[batch], text_mask[batch], float(self.modality_dropout), generator
            )
            total += step(self.network_(image[batch], text[batch], im, tm), batch)
        return total / len(step.target)

    def _predict_positions(self, X: Inputs) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def predict(image_mask: np.ndarray, text_mask: np.ndarray) -> np.ndarray:
            if len(X) == 0:
                return np.zeros(0, dtype=np.int64)
            masked = Inputs(X.texts, X.image, X.text, image_mask, text_mask)
            return np.argmax(self._raw_logits(masked), axis=1)

        return predict

    # -- persistence -----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "n_image_features": self.n_image_features_,
            "n_text_features": self.n_text_features_,
            "best_epoch": self.best_epoch_,
        }

    def _restore(self, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.n_image_features_ = int(config["n_image_features"])
        self.n_text_features_ = int(config["n_text_features"])
        self.best_epoch_ = int(config["best_epoch"])
        self._load_network(weights)
