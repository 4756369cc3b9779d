"""How far does fine-tuning the *whole* photo network take photo-only T10 accuracy on 2 CPU cores?

A feasibility study for issue 3's photo-only target, not a product path: `prodcat train
--fine-tune` tunes the last blocks from cached activations (fast, torch-free prediction); this
script unfreezes every layer of EfficientNet-Lite, which costs a full forward and backward pass
per photo and epoch. It trains on T10's training part (grouped split, the 10 largest
articleTypes), picks the epoch by validation accuracy and reports that epoch's test accuracy.

Recipe: pretrained weights, a linear classifier on the pooled features, AdamW (backbone lr 10x
below the classifier's), a one-cycle schedule, label smoothing 0.1, random horizontal flips and
small random crops of the white-padded square, BatchNorm statistics frozen (batches of 32 give
noisy statistics). Photos are decoded once into memory at the training size.

    python benchmarks/finetune_whole.py --size 128 --epochs 3 [--data ../shared/datasets/...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prodcat.catalogue import ColumnMapping, Product, load_catalogue
from prodcat.encoders.export import load_effnet_torch
from prodcat.heads.finetune import freeze_batch_norm
from prodcat.images import load_image, to_square_array
from prodcat.progress import progress_bar
from prodcat.split import split_catalogue
from prodcat.taxonomy import format_path
from prodcat.train import TrainOptions, select_classes

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)
MEAN, STD = 127.0, 128.0  # the Lite models' input scaling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--encoder", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="the classifier's peak rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    csv_path = args.data / "products.csv"
    if not csv_path.exists():
        sys.exit(f"{csv_path} not found; pass --data PATH to the fashion-products folder")
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    cat = load_catalogue(csv_path, FASHION, verify_images=False, progress=True)
    parts = split_catalogue([p for p in cat.products if p.label and p.image])
    kept, _ = select_classes(parts["train"], TrainOptions(top_classes=10))
    classes = sorted(kept)
    data = {
        name: _decoded([p for p in products if format_path(p.label or ()) in kept], classes, args)
        for name, products in parts.items()
    }
    net = load_effnet_torch(args.encoder, args.size)
    model = torch.nn.Sequential(net, torch.nn.Dropout(0.2), torch.nn.Linear(1280, len(classes)))
    history = _fit(model, data, args)
    best = max(history, key=lambda h: h["validation"])
    result = {
        "encoder": args.encoder,
        "size": args.size,
        "epochs": args.epochs,
        "n_train": len(data["train"][1]),
        "history": history,
        "best_epoch": best["epoch"],
        "validation": best["validation"],
        "test": best["test"],
        "train_seconds": sum(h["seconds"] for h in history),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def _decoded(
    products: list[Product], classes: list[str], args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 white-padded squares and class indices."""

    def one(p: Product) -> np.ndarray:
        img = load_image(p.image, draft_size=args.size)  # type: ignore[arg-type]
        return to_square_array(img, args.size)

    with progress_bar("decoding photos", len(products)) as advance, ThreadPoolExecutor(2) as pool:
        arrays = []
        for array in pool.map(one, products):
            arrays.append(array)
            advance(1)
    y = np.array([classes.index(format_path(p.label or ())) for p in products])
    return np.stack(arrays), y


def _batch(pixels: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Scaled (N, 3, size, size) pixels; randomly flipped and cropped when given an `rng`."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    if rng is not None:
        flip = torch.from_numpy(rng.random(len(x)) < 0.5)
        x[flip] = x[flip].flip(3)
        # A random crop of 85-100% of the side, resized back: products are not always centred.
        size = x.shape[-1]
        side = int(size * rng.uniform(0.85, 1.0))
        top, left = rng.integers(0, size - side + 1, 2)
        x = torch.nn.functional.interpolate(
            x[:, :, top : top + side, left : left + side], size=(size, size), mode="bilinear"
        )
    return (x - MEAN) / STD


def _accuracy(model: torch.nn.Module, pixels: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, len(y), 128):
            logits = model(_batch(pixels[start : start + 128]))
            right += int((logits.argmax(1).numpy() == y[start : start + 128]).sum())
    return right / len(y)


def _fit(
    model: torch.nn.Sequential, data: dict[str, tuple[np.ndarray, np.ndarray]], args: Any
) -> list[dict[str, Any]]:
    pixels, y = data["train"]
    steps = args.epochs * -(-len(y) // args.batch_size)
    backbone, classifier = model[0], model[2]
    optimiser = torch.optim.AdamW(
        [
            {"params": backbone.parameters(), "lr": args.lr / 10},
            {"params": classifier.parameters(), "lr": args.lr},
        ],
        weight_decay=1e-4,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[args.lr / 10, args.lr], total_steps=steps, pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    rng = np.random.default_rng(args.seed)
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        freeze_batch_norm(model)
        order = rng.permutation(len(y))
        batches = range(0, len(y), args.batch_size)
        with progress_bar(f"epoch {epoch}/{args.epochs}", len(batches)) as advance:
            for start in batches:
                index = np.sort(order[start : start + args.batch_size])
                loss = loss_fn(model(_batch(pixels[index], rng)), torch.from_numpy(y[index]))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                advance(1)
        seconds = time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch,
                "seconds": round(seconds, 1),
                "validation": _accuracy(model, *data["validation"]),
                "test": _accuracy(model, *data["test"]),
            }
        )
        print(history[-1], flush=True)
    return history


if __name__ == "__main__":
    main()
