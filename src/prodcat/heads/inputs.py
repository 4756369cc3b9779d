"""What a head sees of n products (`Inputs`): titles, frozen features, and which are present.

Shapes and types are checked once here, so that every head can trust them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np


def _as_mask(name: str, mask: object, n: int) -> np.ndarray:
    """A given mask as a (n,) bool array, refusing anything else with the shape it had."""
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected a bool array (True = the product has it)"
        )
    if array.shape != (n,):
        raise ValueError(
            f"{name} has shape {array.shape} but texts has {n} rows; expected shape ({n},), "
            "one flag per product"
        )
    return array


def _as_features(name: str, features: object, n: int) -> np.ndarray:
    """Given features as a 2-d float32 array with one row per product."""
    array = np.asarray(features)
    if array.ndim != 2:
        raise ValueError(
            f"{name} has shape {array.shape}; expected a 2-d array (n_products, n_features)"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} has dtype {array.dtype}; expected float32 features")
    if array.shape[0] != n:
        raise ValueError(
            f"{name} has {array.shape[0]} rows but texts has {n}; expected one row per product"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


# Which mask says whether a product has each feature matrix of `Inputs`.
MASK_OF = {"image": "image_mask", "image_activations": "image_mask", "text": "text_mask"}


@dataclass(frozen=True, eq=False)
class Inputs:
    """What a head sees of n products.

    A missing modality has its mask False (and its row zeros / ""). Masks default to "present":
    `image_mask` all True when `image` or `image_activations` is given (all False when both are
    None), `text_mask` to ``texts != ""``. Features are stored as contiguous float32, masks as
    bool.

    `image_activations` (optional, last so positional calls keep working) are the flattened
    (n, C*H*W) activations of a photo encoder's frozen trunk ("effnet-lite0-trunk"), for heads
    that fine-tune the rest of the network (`FineTuneHead`); `image_mask` covers them too.
    """

    texts: list[str]
    image: np.ndarray | None = None
    text: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    text_mask: np.ndarray | None = None
    image_activations: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Validate shapes once here so that every head can trust them."""
        texts = self._checked_texts(self.texts)
        n = len(texts)
        object.__setattr__(self, "texts", texts)
        for name in ("image", "text", "image_activations"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_features(name, value, n))
        has_photo_features = self.image is not None or self.image_activations is not None
        if self.image_mask is None:
            image_mask = np.full(n, has_photo_features, dtype=bool)
        else:
            image_mask = _as_mask("image_mask", self.image_mask, n)
            if not has_photo_features and image_mask.any():
                raise ValueError(
                    f"image_mask marks {int(image_mask.sum())} products as having a photo but "
                    "image is None (and so is image_activations); pass the image features or "
                    "leave image_mask out"
                )
        object.__setattr__(self, "image_mask", image_mask)
        if self.text_mask is None:
            text_mask = np.array([t != "" for t in texts], dtype=bool).reshape(n)
        else:
            text_mask = _as_mask("text_mask", self.text_mask, n)
        object.__setattr__(self, "text_mask", text_mask)

    @staticmethod
    def _checked_texts(texts: object) -> list[str]:
        if isinstance(texts, str | bytes):
            raise TypeError("texts is a single string; expected a list of titles, one per product")
        if not isinstance(texts, Sequence | np.ndarray):
            raise TypeError(
                f"texts is a {type(texts).__name__}; expected a list of titles, one per product"
            )
        out = list(texts)
        for index, text in enumerate(out):
            if not isinstance(text, str):
                raise TypeError(
                    f"texts[{index}] is a {type(text).__name__} ({text!r}); expected str. Use '' "
                    "for a product without a title"
                )
        return out

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def has_image(self) -> np.ndarray:
        """(n,) bool: which products have image features (never None, unlike `image_mask`)."""
        return np.asarray(self.image_mask, dtype=bool)

    @property
    def has_text(self) -> np.ndarray:
        """(n,) bool: which products have a title / text features."""
        return np.asarray(self.text_mask, dtype=bool)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Inputs:
        """The products at `idx` (integer positions or a bool mask), in that order."""
        index = np.asarray(idx)
        if index.dtype == np.bool_:
            if index.shape != (len(self),):
                raise ValueError(f"a bool index must have shape ({len(self)},), got {index.shape}")
            index = np.flatnonzero(index)
        index = index.astype(np.intp, copy=False).reshape(-1)
        return Inputs(
            texts=[self.texts[i] for i in index],
            image=None if self.image is None else self.image[index],
            text=None if self.text is None else self.text[index],
            image_mask=self.has_image[index],
            text_mask=self.has_text[index],
            image_activations=(
                None if self.image_activations is None else self.image_activations[index]
            ),
        )


# The modalities a product can have, and a model can be shown (`--modalities`).
MODALITIES = ("image", "text")


def parse_modalities(value: str | Collection[str] | None) -> frozenset[str] | None:
    """'image,text' / 'image' / 'text' (or a collection) -> a set; None means 'all'."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    chosen = frozenset(n for n in names if n)
    unknown = sorted(chosen - set(MODALITIES))
    if unknown or not chosen:
        raise ValueError(
            f"modalities {value!r}: expected image,text or image or text (got {unknown or 'none'})"
        )
    return chosen


def restrict(inputs: Inputs, modalities: Collection[str] | None) -> Inputs:
    """The same products with the modalities not in `modalities` masked out (zeros, '')."""
    if modalities is None or set(MODALITIES) <= set(modalities):
        return inputs
    n = len(inputs)
    keep_image, keep_text = "image" in modalities, "text" in modalities

    def zeros(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else np.zeros_like(values)

    return Inputs(
        texts=inputs.texts if keep_text else [""] * n,
        image=inputs.image if keep_image else zeros(inputs.image),
        text=inputs.text if keep_text else zeros(inputs.text),
        image_mask=inputs.has_image if keep_image else np.zeros(n, dtype=bool),
        text_mask=inputs.has_text if keep_text else np.zeros(n, dtype=bool),
        image_activations=(
            inputs.image_activations if keep_image else zeros(inputs.image_activations)
        ),
    )


def join_inputs(parts: Sequence[Inputs]) -> Inputs:
    """Several products' `Inputs` as one, in order (the same features present in each)."""

    def stacked(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return Inputs(
        texts=[t for p in parts for t in p.texts],
        image=stacked("image"),
        text=stacked("text"),
        image_mask=np.concatenate([p.has_image for p in parts]),
        text_mask=np.concatenate([p.has_text for p in parts]),
        image_activations=stacked("image_activations"),
    )
