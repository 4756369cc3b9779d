"""Fine-tuning every layer of the photo network on a catalogue (`prodcat train --fine-tune-whole`).

Frozen ImageNet features plateau around 91-92% on T10's photos; tuning only the last blocks on
cached activations (`FineTuneHead`) did not move that, while tuning the whole network gained 2-3
points (docs/benchmarks.md, "Photo only"). So this trains EfficientNet-Lite end to end as a photo
classifier, picks the epoch by validation accuracy, and exports the tuned feature extractor to
ONNX. The model then uses it as its photo encoder ("effnet-lite0-tuned@160"), so everything
downstream (the fusion network, the gate's photo distances, serving) is unchanged and torch-free.

Why it is practical on 2 cores: photos are decoded once into memory at the training size (about
77 KB per photo at 160 px), BatchNorm statistics stay frozen (batches of 32 give noisy ones), and
a few epochs of a one-cycle schedule suffice. The cost is still a forward and backward pass per
photo and epoch: about 6.5 minutes per epoch for T10's 17k training photos at 160 px.

Recipe: AdamW with the backbone's rate 10x below the new classifier's, a one-cycle schedule,
label smoothing 0.1, dropout 0.2 before the classifier, random horizontal flips and crops of
85-100% of the padded square (products are not always centred).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prodcat.catalogue import Product
from prodcat.catalogue.images import ImageError, load_image
from prodcat.encoders.image import FEATURE_DIM, TUNED_SUFFIX, EfficientNetLiteEncoder
from prodcat.encoders.registry import encoder_name
from prodcat.progress import progress_bar

if TYPE_CHECKING:
    import torch

EVAL_BATCH = 128


@dataclass(frozen=True)
class WholeTuneSettings:
    """How to fine-tune: epochs (the best by validation accuracy is kept), batch size, the
    classifier's peak learning rate (the backbone gets a tenth), seed, torch threads."""

    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; expected a positive whole number")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}; expected a positive learning rate, e.g. 3e-3")


@dataclass
class PhotoSet:
    """Photos decoded into memory: uint8 (N, size, size, 3) pixels, class indices, and the ids of
    the products whose photo could not be read (with why) so they are reported, not dropped."""

    pixels: np.ndarray
    y: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class TunedPhotoNetwork:
    """The result: the encoder name to use, its ONNX file, and how training went."""

    encoder: str
    onnx_file: Path
    history: list[dict[str, Any]]
    best_epoch: int
    n_train: int
    errors: dict[str, str]
    network: Any = None  # the tuned torch classifier (features + head), for studies

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures for model.json."""
        return {
            "encoder": self.encoder,
            "best_epoch": self.best_epoch,
            "n_train": self.n_train,
            "history": self.history,
            "photos_not_read": len(self.errors),
        }


def decode_photos(
    products: Sequence[Product],
    labels: Sequence[int],
    encoder: EfficientNetLiteEncoder,
    *,
    description: str = "decoding photos",
    progress: bool = True,
) -> PhotoSet:
    """The products' photos preprocessed exactly as `encoder` will see them at prediction."""

    def one(p: Product) -> np.ndarray | str:
        if p.image is None:
            return "no photo"
        try:
            return encoder.preprocess(load_image(p.image, draft_size=encoder.draft_size))
        except ImageError as exc:
            return str(exc)

    arrays, y, errors = [], [], {}
    with (
        progress_bar(description, len(products), enabled=progress) as advance,
        ThreadPoolExecutor(2) as pool,
    ):
        for product, label, result in zip(products, labels, pool.map(one, products), strict=True):
            if isinstance(result, str):
                errors[product.id] = result
            else:
                arrays.append(result)
                y.append(label)
            advance(1)
    size = encoder.size
    pixels = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return PhotoSet(pixels, np.asarray(y, dtype=np.int64), errors)


def tune_whole_network(
    frozen: EfficientNetLiteEncoder,
    train: PhotoSet,
    validation: PhotoSet,
    n_classes: int,
    out_dir: Path,
    settings: WholeTuneSettings,
    *,
    progress: bool = True,
) -> TunedPhotoNetwork:
    """Fine-tune the pretrained network of `frozen` (its variant and size, the encoder that
    decoded the photos) and export the best epoch's feature extractor to `out_dir`. Validation
    accuracy picks the epoch (ties: the earlier one)."""

    from prodcat.encoders.export import export_tuned_effnet, load_effnet_torch
    from prodcat.heads.torch_training import seeded

    if len(train.y) == 0 or len(validation.y) == 0:
        raise ValueError(
            f"fine-tuning needs training and validation photos; got {len(train.y)} and "
            f"{len(validation.y)} readable ones"
        )
    with seeded(settings.seed, settings.threads, deterministic=False):
        size = frozen.size
        network = _classifier(load_effnet_torch(frozen.spec.name, size), n_classes)
        history = _fit(network, train, validation, settings, progress)  # the best epoch's weights
        best = max(history, key=lambda h: h["validation"])
        tuned_name = f"{frozen.spec.name}{TUNED_SUFFIX}"
        path = Path(out_dir) / f"{tuned_name}-{size}px-{int(time.time() * 1e6):x}.onnx"
        export_tuned_effnet(network[0], tuned_name, size, path, tuned_from=frozen.version)
    return TunedPhotoNetwork(
        encoder=encoder_name(tuned_name, size),
        onnx_file=path,
        history=history,
        best_epoch=int(best["epoch"]),
        n_train=len(train.y),
        errors={**train.errors, **validation.errors},
        network=network.eval(),
    )


def _classifier(features: torch.nn.Module, n_classes: int) -> torch.nn.Sequential:
    import torch

    return torch.nn.Sequential(
        features, torch.nn.Dropout(0.2), torch.nn.Linear(FEATURE_DIM, n_classes)
    )


def pixels_batch(pixels: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Scaled (N, 3, size, size) pixels; randomly flipped and cropped when given an `rng`."""
    import torch

    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    if rng is not None:
        flip = torch.from_numpy(rng.random(len(x)) < 0.5)
        x[flip] = x[flip].flip(3)
        size = x.shape[-1]
        side = int(size * rng.uniform(0.85, 1.0))
        top, left = rng.integers(0, size - side + 1, 2)
        x = torch.nn.functional.interpolate(
            x[:, :, top : top + side, left : left + side], size=(size, size), mode="bilinear"
        )
    mean, std = EfficientNetLiteEncoder.mean, EfficientNetLiteEncoder.std
    return (x - mean) / std


def accuracy(network: torch.nn.Module, photos: PhotoSet) -> float:
    """Share of `photos` the tuned classifier gets right (eval mode, no augmentation)."""
    import torch

    network.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, len(photos.y), EVAL_BATCH):
            logits = network(pixels_batch(photos.pixels[start : start + EVAL_BATCH]))
            right += int((logits.argmax(1).numpy() == photos.y[start : start + EVAL_BATCH]).sum())
    return right / max(1, len(photos.y))


def _fit(
    network: torch.nn.Sequential,
    train: PhotoSet,
    validation: PhotoSet,
    settings: WholeTuneSettings,
    progress: bool,
) -> list[dict[str, Any]]:
    """Train `network` for `settings.epochs` epochs (the shared loop of
    `prodcat.heads.torch_training`); it ends with the weights of the best validation epoch."""
    import torch

    from prodcat.heads.torch_training import Stepper, freeze_batch_norm, train_epochs

    n_batches = -(-len(train.y) // settings.batch_size)
    backbone, head = network[0], network[2]
    optimiser = torch.optim.AdamW(
        [
            {"params": backbone.parameters(), "lr": settings.lr / 10},
            {"params": head.parameters(), "lr": settings.lr},
        ],
        weight_decay=1e-4,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=[settings.lr / 10, settings.lr],
        total_steps=settings.epochs * n_batches,
        pct_start=0.15,
    )
    step = Stepper(optimiser, torch.from_numpy(train.y), label_smoothing=0.1, scheduler=schedule)
    rng = np.random.default_rng(settings.seed)

    def run(epoch: int) -> dict[str, Any]:
        start = time.perf_counter()
        network.train()
        freeze_batch_norm(network)
        order = rng.permutation(len(train.y))
        description = f"fine-tuning the photo network: epoch {epoch}/{settings.epochs}"
        with progress_bar(description, n_batches, enabled=progress) as advance:
            for first in range(0, len(order), settings.batch_size):
                index = np.sort(order[first : first + settings.batch_size])
                step(network(pixels_batch(train.pixels[index], rng)), torch.from_numpy(index))
                advance(1)
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch,
            "seconds": round(seconds, 1),
            "validation": accuracy(network, validation),
        }

    return train_epochs(network, range(1, settings.epochs + 1), run, score="validation")
