"""The nearest labelled training products of a product: a compact index the model folder keeps.

`prodcat train` writes `neighbours/` into the model folder: every training product's embedding in
the model's own input space (the photo features and the title embedding the head reads, each
centred, projected on its top `DIMS` principal axes and L2-normalised, then joined so that the
similarity of two products with both is the mean of their photo and title cosines), quantised to
int8 with one scale per row, beside each product's id, title, category and photo path. A model
without dense features (the title-only head) embeds titles as hashed words instead. The explanations
(`prodcat.model.explain`) show the 3 nearest; the desk shows their photos when the files exist.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from threadpoolctl import ThreadpoolController

from prodcat.catalogue import Product
from prodcat.encoders.base import unit_rows
from prodcat.encoders.hashing import HashedWordsEncoder
from prodcat.heads.inputs import Inputs
from prodcat.taxonomy.tree import format_path

INDEX_DIR = "neighbours"
ARRAYS_FILE = "index.safetensors"
PRODUCTS_FILE = "products.json"
FORMAT = 1
DIMS = 64  # principal axes kept per source: 128 bytes a product with a photo and a title
MAX_PCA_ROWS = 20_000  # the axes are fitted on a random subset at most this large
SOURCES = ("image", "text")
WORDS = "words"  # the hashed-words source of a model that reads no dense features
WORDS_DIM = 4096
FEW_ROWS = 64


class NeighbourIndexError(ValueError):
    """A saved index that cannot be read as it is; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Neighbour:
    """One labelled training product near the one explained."""

    id: str
    title: str
    category: str
    similarity: float  # cosine in the model's input space, 1 = the same product
    photo: str | None  # the photo's path when the model was trained

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "category": self.category,
            "similarity": round(self.similarity, 4),
            "photo": self.photo,
        }


@dataclass
class Projection:
    """One source's centring and principal axes."""

    mean: np.ndarray  # (d,)
    axes: np.ndarray  # (d, DIMS)

    def unit(self, values: np.ndarray) -> np.ndarray:
        z = (np.asarray(values, dtype=np.float32) - self.mean) @ self.axes
        return unit_rows(z)


@dataclass
class NeighbourIndex:
    """Training products' embeddings (int8 codes, one scale per row) and what to show of each."""

    projections: dict[str, Projection]
    codes: np.ndarray  # (n, dims) int8
    scales: np.ndarray  # (n,) float32: a row is codes * scale
    ids: list[str]
    titles: list[str]
    categories: list[str]
    photos: list[str | None]

    def __post_init__(self) -> None:
        # Dequantised once: the similarity of a batch is one float32 matrix product.
        self._bank = self.codes.astype(np.float32) * self.scales[:, None]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sources(self) -> list[str]:
        return list(self.projections)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, products: Sequence[Product], inputs: Inputs, *, seed: int = 0) -> NeighbourIndex:
        """The index of `products` (labelled) from their encoded `inputs`, row for row."""
        if len(products) != len(inputs):
            raise ValueError(
                f"{len(products)} products but {len(inputs)} rows of inputs; expected one row each"
            )
        rng = np.random.default_rng(seed)
        projections = {}
        for source, values, mask in _sources(inputs):
            rows = values[mask]
            if len(rows) > 2:
                projections[source] = _fit_projection(rows, rng)
        if not projections:
            raise ValueError("no product has a photo or a title to index")
        codes, scales = _quantise(_embed(projections, inputs))
        return cls(
            projections,
            codes,
            scales,
            ids=[p.id for p in products],
            titles=[p.text for p in products],
            categories=[format_path(p.label) if p.label else "" for p in products],
            photos=[str(Path(p.image).resolve()) if p.image else None for p in products],
        )

    @classmethod
    def build_if_any(cls, products: Sequence[Product], inputs: Inputs) -> NeighbourIndex | None:
        """`build`, or None when the inputs hold nothing this index reads (a head fed only the
        photo network's activations, `--fine-tune` without a title encoder)."""
        if not any(mask.sum() > 2 for _, _, mask in _sources(inputs)):
            return None
        return cls.build(products, inputs)

    def embed(self, inputs: Inputs) -> np.ndarray:
        """(n, dims) rows of unit length (zero for a product with nothing this index reads)."""
        return _embed(self.projections, inputs)

    # -- querying ---------------------------------------------------------------------------
    def nearest(self, inputs: Inputs, k: int = 3) -> list[list[Neighbour]]:
        """The `k` most similar training products of each product, most similar first."""
        if len(self) == 0 or len(inputs) == 0:
            return [[] for _ in range(len(inputs))]
        # BLAS threads cost more than they save on a few rows (the API's case): one thread then.
        few = len(inputs) <= FEW_ROWS
        with _blas().limit(limits=1, user_api="blas") if few else contextlib.nullcontext():
            sims = self.embed(inputs) @ self._bank.T
        k = min(k, len(self))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out = []
        for i, row in enumerate(top):
            order = row[np.argsort(-sims[i, row], kind="stable")]
            out.append([self._neighbour(int(j), float(sims[i, j])) for j in order])
        return out

    def _neighbour(self, j: int, similarity: float) -> Neighbour:
        return Neighbour(
            self.ids[j], self.titles[j], self.categories[j], similarity, self.photos[j]
        )

    # -- persistence ------------------------------------------------------------------------
    def save(self, model_folder: str | Path) -> Path:
        folder = Path(model_folder) / INDEX_DIR
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"codes": self.codes, "scales": self.scales}
        for source, projection in self.projections.items():
            arrays[f"{source}.mean"] = projection.mean
            arrays[f"{source}.axes"] = projection.axes
        safetensors.numpy.save_file(arrays, str(folder / ARRAYS_FILE))
        products = {
            "format": FORMAT,
            "sources": self.sources,
            "ids": self.ids,
            "titles": self.titles,
            "categories": self.categories,
            "photos": self.photos,
        }
        (folder / PRODUCTS_FILE).write_text(json.dumps(products, ensure_ascii=False))
        return folder

    @classmethod
    def load(cls, model_folder: str | Path) -> NeighbourIndex | None:
        """The model folder's index; None when the model was trained without one."""
        folder = Path(model_folder) / INDEX_DIR
        if not (folder / PRODUCTS_FILE).is_file():
            return None
        try:
            meta = json.loads((folder / PRODUCTS_FILE).read_text(encoding="utf-8"))
            arrays = safetensors.numpy.load_file(str(folder / ARRAYS_FILE))
        except (OSError, ValueError) as exc:
            raise NeighbourIndexError(
                f"{folder}: the neighbour index cannot be read: {exc}"
            ) from None
        if meta.get("format") != FORMAT:
            raise NeighbourIndexError(
                f"{folder / PRODUCTS_FILE} has format {meta.get('format')!r}, expected {FORMAT}: "
                "retrain the model"
            )
        projections = {
            s: Projection(arrays[f"{s}.mean"], arrays[f"{s}.axes"]) for s in meta["sources"]
        }
        n = len(meta["ids"])
        if arrays["codes"].shape[0] != n or any(
            len(meta[key]) != n for key in ("titles", "categories", "photos")
        ):
            raise NeighbourIndexError(
                f"{folder}: {arrays['codes'].shape[0]} embeddings for {n} products; expected one "
                "each: retrain the model"
            )
        return cls(
            projections,
            arrays["codes"],
            arrays["scales"],
            meta["ids"],
            meta["titles"],
            meta["categories"],
            meta["photos"],
        )


def _sources(inputs: Inputs) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(source, values, which products have it) for what the index reads of `inputs`: the dense
    photo and title features, else the title's hashed words."""
    out = []
    for source in SOURCES:
        values = getattr(inputs, source)
        if values is not None and values.shape[1] > 0:
            mask = inputs.has_image if source == "image" else inputs.has_text
            out.append((source, values, mask))
    if not out:
        hashed = HashedWordsEncoder(dim=WORDS_DIM).encode(inputs.texts)
        out.append((WORDS, hashed, inputs.has_text))
    return out


def _embed(projections: dict[str, Projection], inputs: Inputs) -> np.ndarray:
    blocks = []
    for source, values, mask in _sources(inputs):
        projection = projections.get(source)
        if projection is None:
            continue
        block = np.zeros((len(inputs), projection.axes.shape[1]), dtype=np.float32)
        if mask.any():
            block[mask] = projection.unit(values[mask])
        blocks.append(block)
    return unit_rows(np.hstack(blocks))


@functools.cache
def _blas() -> ThreadpoolController:
    """Scanning the loaded BLAS libraries costs milliseconds: once."""
    return ThreadpoolController()


def _fit_projection(rows: np.ndarray, rng: np.random.Generator) -> Projection:
    rows = np.asarray(rows, dtype=np.float32)
    if len(rows) > MAX_PCA_ROWS:
        rows = rows[rng.choice(len(rows), MAX_PCA_ROWS, replace=False)]
    mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    dims = int(min(DIMS, rows.shape[1], len(rows) - 1))
    centred = rows - mean
    if min(centred.shape) <= 2 * dims:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        from sklearn.utils.extmath import randomized_svd

        _, _, vt = randomized_svd(centred, dims, n_iter=4, random_state=0)
    return Projection(mean, np.ascontiguousarray(vt[:dims].T, dtype=np.float32))


def _quantise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and one float32 scale per row (the largest value maps to 127)."""
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(len(rows), np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales
