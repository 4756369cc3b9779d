"""How far does fine-tuning the *whole* photo network take photo-only T10 accuracy on 2 CPU cores?

Runs `prodcat.training.whole_network` (what `prodcat train --fine-tune-whole` runs) on T10's
training part (grouped split, the 10 largest articleTypes), picks the epoch by validation accuracy
and reports the tuned classifier's own test accuracy at that epoch: the photo-only figure of the
network alone, before any head is trained on its features. The recipe is in
`prodcat/whole_finetune.py`.

    python benchmarks/finetune_whole.py --size 160 --epochs 4 [--data ../shared/datasets/...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from prodcat.catalogue import ColumnMapping, load_catalogue
from prodcat.catalogue.split import split_catalogue
from prodcat.encoders.image import EfficientNetLiteEncoder
from prodcat.taxonomy.tree import format_path
from prodcat.training.train import TrainOptions, select_classes
from prodcat.training.whole_network import (
    WholeTuneSettings,
    accuracy,
    decode_photos,
    tune_whole_network,
)

FASHION = ColumnMapping(
    label_column=None, label_columns=("masterCategory", "subCategory", "articleType")
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/fashion-products"))
    parser.add_argument("--encoder", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="the classifier's peak rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    csv_path = args.data / "products.csv"
    if not csv_path.exists():
        sys.exit(f"{csv_path} not found; pass --data PATH to the fashion-products folder")

    cat = load_catalogue(csv_path, FASHION, verify_images=False, progress=True)
    parts = split_catalogue([p for p in cat.products if p.label and p.image])
    kept, _ = select_classes(parts["train"], TrainOptions(top_classes=10))
    classes = sorted(kept)
    encoder = EfficientNetLiteEncoder(args.encoder, size=args.size)
    photos = {}
    for name, products in parts.items():
        inside = [p for p in products if format_path(p.label or ()) in kept]
        labels = [classes.index(format_path(p.label or ())) for p in inside]
        photos[name] = decode_photos(inside, labels, encoder, description=f"decoding {name}")
    settings = WholeTuneSettings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    with tempfile.TemporaryDirectory() as folder:
        tuned = tune_whole_network(
            encoder,
            photos["train"],
            photos["validation"],
            len(classes),
            Path(folder),
            settings,
        )
    best = tuned.history[tuned.best_epoch - 1]
    result = {
        "encoder": args.encoder,
        "size": args.size,
        "epochs": args.epochs,
        "n_train": tuned.n_train,
        "history": tuned.history,
        "best_epoch": tuned.best_epoch,
        "validation": best["validation"],
        "test": accuracy(tuned.network, photos["test"]),
        "train_seconds": sum(h["seconds"] for h in tuned.history),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
