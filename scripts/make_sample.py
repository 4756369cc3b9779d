"""Draw the bundled sample catalogue from ../shared/datasets/fashion-products (fixed seed).

Keeps the real messiness on purpose: a few byte-identical photo groups and a few articleTypes that
occur under more than one parent, so that the demo and the tests meet them.

    python scripts/make_sample.py [--source ../shared/datasets/fashion-products]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

N_CLASSES = 20
N_PRODUCTS = 1500
SEED = 20261124
OUT = Path(__file__).resolve().parents[1] / "src" / "prodcat" / "data" / "sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("../shared/datasets/fashion-products"))
    args = parser.parse_args()
    src: Path = args.source
    df = pd.read_csv(src / "products.csv", dtype={"id": str})
    top = df["articleType"].value_counts().index[:N_CLASSES]
    df = df[df["articleType"].isin(top)].copy()
    df["sha"] = [hashlib.sha256((src / p).read_bytes()).hexdigest() for p in df["image"]]
    rng = np.random.default_rng(SEED)

    # Messy rows first: minority parents of an articleType, and byte-identical photo groups.
    parents = df.groupby(["articleType", "masterCategory", "subCategory"])["id"].transform("size")
    majority = df.groupby("articleType")["id"].transform("size")
    odd = df[parents < 0.5 * majority].groupby("articleType").head(3)
    dup_shas = df["sha"].value_counts()
    dup_shas = dup_shas[dup_shas > 1].index[:15]
    dups = df[df["sha"].isin(dup_shas)]
    keep = pd.concat([odd, dups]).drop_duplicates("id")

    # The rest: per class proportional to sqrt(count), so the long tail is kept but not starved.
    weights = np.sqrt(df["articleType"].value_counts())
    quota = (weights / weights.sum() * (N_PRODUCTS - len(keep))).round().astype(int)
    rest = df[~df["id"].isin(keep["id"])]
    parts = [keep]
    for cls, n in quota.items():
        pool = rest[rest["articleType"] == cls]
        parts.append(pool.iloc[rng.permutation(len(pool))[:n]])
    sample = pd.concat(parts).sort_values("id", key=lambda s: s.astype(int))

    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "images").mkdir(parents=True)
    for p in sample["image"]:
        shutil.copyfile(src / p, OUT / p)
    sample["category"] = (
        sample["masterCategory"] + " > " + sample["subCategory"] + " > " + sample["articleType"]
    )
    cols = ["id", "title", "image", "category", "gender", "baseColour"]
    sample[cols].to_csv(OUT / "products.csv", index=False)
    print(f"wrote {len(sample)} products over {sample['articleType'].nunique()} articleTypes")


if __name__ == "__main__":
    main()
