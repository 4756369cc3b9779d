"""Model inputs from products: features aligned to products (`build_inputs`) and the fingerprint
of what a model learnt from (`training_fingerprint`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from prodcat.catalogue import Product
from prodcat.encoders.registry import is_trunk
from prodcat.features.encode import Features
from prodcat.heads import Inputs
from prodcat.taxonomy.tree import format_path


def build_inputs(
    products: Sequence[Product], image: Features | None, text: Features | None
) -> tuple[Inputs, dict[str, str]]:
    """Align features to products; a product without a vector gets a zero row and mask False."""
    ids = [p.id for p in products]
    kwargs: dict[str, np.ndarray] = {}
    for name, feats in (("image", image), ("text", text)):
        if feats is None:
            continue
        mask, rows = feats.lookup(ids)
        matrix = np.zeros((len(ids), feats.vectors.shape[1]), dtype=np.float32)
        matrix[mask] = rows
        # A trunk encoder's output is the activations the fine-tune head runs its tail on.
        key = "image_activations" if is_trunk(feats.encoder) else name
        kwargs[key], kwargs[f"{name}_mask"] = matrix, mask
    if "image_activations" in kwargs and text is None:
        # The fine-tune head always has a text branch; a photo-only one gets an empty input.
        kwargs["text"] = np.zeros((len(ids), 0), dtype=np.float32)
        kwargs["text_mask"] = np.zeros(len(ids), dtype=bool)
    errors = {**(image.errors if image else {}), **(text.errors if text else {})}
    return Inputs(texts=[p.text for p in products], **kwargs), errors


def training_fingerprint(products: Sequence[Product]) -> str:
    """A hash of what the model learnt from: ids, labels, photo and title contents."""
    digest = hashlib.sha256()
    for p in sorted(products, key=lambda p: p.id):
        label = format_path(p.label) if p.label else ""
        digest.update(f"{p.id}\t{label}\t{p.image_sha256 or ''}\t{p.text}\n".encode())
    return digest.hexdigest()
