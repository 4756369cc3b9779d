"""What the drift alarm looks at, one row per product: the gate's decision, the calibrated
confidence, the OOD score, the predicted class, whether a photo and a title came with it, and the
photo's size. Plain arrays, whichever interface produced them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prodcat.gate.gate import DECISIONS


@dataclass(frozen=True)
class Observations:
    """Per product: decision, confidence (calibrated top probability), OOD score (NaN where the
    model has none), predicted class index, has_photo, has_title, photo_side (the photo's longer
    side in pixels, NaN without a photo)."""

    decisions: np.ndarray
    confidence: np.ndarray
    ood_score: np.ndarray
    predicted: np.ndarray
    has_photo: np.ndarray
    has_title: np.ndarray
    photo_side: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.decisions)
        for name, dtype in (
            ("decisions", object),
            ("confidence", np.float64),
            ("ood_score", np.float64),
            ("predicted", np.int64),
            ("has_photo", bool),
            ("has_title", bool),
            ("photo_side", np.float64),
        ):
            array = np.asarray(getattr(self, name), dtype=dtype).reshape(-1)
            if len(array) != n:
                raise ValueError(
                    f"observations: {name} has {len(array)} values but decisions has {n}; "
                    "expected one value per product"
                )
            object.__setattr__(self, name, array)
        unknown = sorted({str(d) for d in self.decisions} - set(DECISIONS))
        if unknown:
            raise ValueError(
                f"observations: decision(s) {unknown} are not one of {', '.join(DECISIONS)}"
            )

    def __len__(self) -> int:
        return len(self.decisions)

    def subset(self, rows: np.ndarray | Sequence[int]) -> Observations:
        """The observations of `rows` (indices or a boolean mask), in that order."""
        index = np.asarray(rows)
        return Observations(*(getattr(self, name)[index] for name in FIELDS))

    @classmethod
    def concatenate(cls, parts: Sequence[Observations]) -> Observations:
        if not parts:
            return empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS))


FIELDS = (
    "decisions",
    "confidence",
    "ood_score",
    "predicted",
    "has_photo",
    "has_title",
    "photo_side",
)


def empty() -> Observations:
    return Observations(*(np.zeros(0) for _ in FIELDS))


def photo_side(image: bytes | str | Path | None) -> float:
    """The longer side of a photo in pixels, from its header only (no decoding); NaN without a
    photo or when the header cannot be read (the photo's own error is reported elsewhere)."""
    if image is None:
        return float("nan")
    from PIL import Image, UnidentifiedImageError

    try:
        source = io.BytesIO(image) if isinstance(image, bytes) else Path(image)
        with Image.open(source) as img:
            return float(max(img.size))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return float("nan")


__all__ = ["DECISIONS", "FIELDS", "Observations", "empty", "photo_side"]
