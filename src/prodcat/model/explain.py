"""Why the model answered what it did: the title's words, photo against title, similar products.

An explanation of one product's answer holds:

- `words`: each word of the title and how far it moves the answer's score towards the top
  category and away from the runner-up (the difference of their logits, in the head's own units;
  negative: the word argues for the runner-up), strongest first. Two ways to measure it:
  `occlusion` encodes the title again without the word (every occurrence) and runs the whole head
  with the same photo, so every part that reads the title counts (sentence embedding and words
  alike), at one more title encoding per word; `linear` takes the exact contributions of the
  head's linear words model (a title head's, a blend's words part), nearly free but blind to what
  the sentence embedding makes of the words. `WORD_METHOD` is the one the deletion test on FULL's
  validation part chose (`benchmarks/explain.py`, docs/explain.md); a head without a linear words
  model always gets occlusion.
- `photo` / `title`: their Shapley shares of the same score against what the head answers with
  neither (the four cases by masking the modalities, `prodcat.heads.inputs.restrict`), and the
  probability of the top category from each alone.
- `neighbours`: the 3 most similar labelled training products (`prodcat.model.neighbours`).

Faithfulness is measured, not assumed: `deletion_test` removes each product's top 2 words and, for
comparison, 2 random words, and counts how often the answer changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from prodcat.encoders.base import Encoder
from prodcat.encoders.words import TOKEN_PATTERN, words
from prodcat.heads.inputs import Inputs, join_inputs, restrict
from prodcat.model.neighbours import Neighbour

if TYPE_CHECKING:  # the bundle calls this module, never the reverse at import
    from prodcat.catalogue import Product
    from prodcat.features.cache import FeatureCache
    from prodcat.model.bundle import Model
    from prodcat.model.prediction import Prediction

NEIGHBOURS = 3
DELETED_WORDS = 2
# "occlusion" or "linear": the deletion test on FULL's validation part puts linear level with
# occlusion at a fraction of its cost (docs/explain.md has the figures).
WORD_METHOD = "linear"
# Titles encoded again per call at most (a title gives one variant per distinct word).
VARIANT_CHUNK = 512

_TOKEN = re.compile(TOKEN_PATTERN)

TitleEncoding = Callable[[list[str]], np.ndarray]


@dataclass
class Explanation:
    """One product's reasons; see the module docstring."""

    category: str
    runner_up: str | None
    words: list[tuple[str, float]] = field(default_factory=list)
    word_method: str = WORD_METHOD
    # Shapley shares of the score, |photo| + |title| = 1; negative: it argues for the runner-up
    # (None: the product or the model has one modality).
    photo: float | None = None
    title: float | None = None
    photo_alone: float | None = None  # the top category's probability from the photo alone
    title_alone: float | None = None
    neighbours: list[Neighbour] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "runner_up": self.runner_up,
            "words": [{"word": w, "weight": round(v, 4)} for w, v in self.words],
            "word_method": self.word_method,
            "photo": _rounded(self.photo),
            "title": _rounded(self.title),
            "photo_alone": _rounded(self.photo_alone),
            "title_alone": _rounded(self.title_alone),
            "neighbours": [n.as_dict() for n in self.neighbours],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# -- the entry points -----------------------------------------------------------------------------
def title_encoding(encoders: Sequence[Encoder]) -> TitleEncoding | None:
    """Titles -> the text features the head reads (None: the head reads the words itself)."""
    if not encoders:
        return None

    def encode(titles: list[str]) -> np.ndarray:
        return np.hstack([np.asarray(e.encode(titles), dtype=np.float32) for e in encoders])

    return encode


def model_title_encoding(model: Model) -> TitleEncoding | None:
    """`title_encoding` with the model's own text encoders."""
    from prodcat.encoders.registry import split_encoders

    names = split_encoders(model.text_encoder or "")
    return title_encoding([model.get_encoder(name) for name in names])


def explain(
    model: Model,
    inputs: Inputs,
    encode_titles: TitleEncoding | None,
    *,
    logits: np.ndarray | None = None,
    method: str | None = None,
) -> list[Explanation]:
    """One explanation per product of `inputs` (what the head was given), in order; `method`
    of the words: "occlusion" or "linear" (default `WORD_METHOD`)."""
    method = word_method(model, method or WORD_METHOD)
    if logits is None:
        logits = model.head.decision_logits(inputs)
    classes = model.classes
    top, runner = _top_two(logits)
    weights = word_weights(model, inputs, encode_titles, top, runner, method=method)
    shares = modality_shares(model, inputs, logits, top, runner)
    neighbours = (
        model.neighbours.nearest(inputs, NEIGHBOURS)
        if model.neighbours is not None
        else [[] for _ in range(len(inputs))]
    )
    out = []
    for i in range(len(inputs)):
        photo, title, photo_alone, title_alone = shares[i]
        out.append(
            Explanation(
                category=classes[top[i]],
                runner_up=classes[runner[i]] if runner[i] >= 0 else None,
                words=weights[i],
                word_method=method,
                photo=photo,
                title=title,
                photo_alone=photo_alone,
                title_alone=title_alone,
                neighbours=neighbours[i],
            )
        )
    return out


def explain_encoded(
    model: Model, products: Sequence[Product], cache: FeatureCache
) -> list[dict[str, Any]]:
    """The reasons of `products`, their features read through the feature cache."""
    inputs, _ = model.encode(products, cache, progress=False)
    return [e.as_dict() for e in explain(model, inputs, model_title_encoding(model))]


def attach(
    model: Model,
    inputs: Inputs,
    logits: np.ndarray,
    predictions: Sequence[Prediction],
    rows: Sequence[int],
    encode_titles: TitleEncoding | None,
) -> None:
    """Give the predictions at `rows` their explanation (`Prediction.explanation`)."""
    index = np.asarray(rows, dtype=np.intp)
    for row, explanation in zip(
        index,
        explain(model, inputs.subset(index), encode_titles, logits=logits[index]),
        strict=True,
    ):
        predictions[row].explanation = explanation.as_dict()


# -- the title's words ----------------------------------------------------------------------------
def word_weights(
    model: Model,
    inputs: Inputs,
    encode_titles: TitleEncoding | None,
    top: np.ndarray,
    runner: np.ndarray,
    *,
    method: str = WORD_METHOD,
) -> list[list[tuple[str, float]]]:
    """Per product, (word, push towards top against runner-up), strongest first."""
    if word_method(model, method) == "linear":
        return _linear_weights(model, inputs, top, runner)
    return _occlusion_weights(model, inputs, encode_titles, top, runner)


def word_method(model: Model, method: str) -> str:
    """The method the words of `model` get: "linear" needs a head with a linear words model
    (else occlusion)."""
    if method not in ("occlusion", "linear"):
        raise ValueError(f"word method {method!r}; expected 'occlusion' or 'linear'")
    return "linear" if method == "linear" and _linear_part(model) is not None else "occlusion"


def distinct_words(title: str) -> list[str]:
    """The title's words as the title encoders split them, each once, in order."""
    return list(dict.fromkeys(words(title)))


def without_words(title: str, removed: set[str]) -> str:
    """The title with every occurrence of the `removed` words (lower-cased) taken out."""
    if not removed:
        return title
    kept = _TOKEN.sub(lambda m: "" if m.group(0).lower() in removed else m.group(0), title)
    return " ".join(kept.split())


def _occlusion_weights(
    model: Model,
    inputs: Inputs,
    encode_titles: TitleEncoding | None,
    top: np.ndarray,
    runner: np.ndarray,
) -> list[list[tuple[str, float]]]:
    vocab = [distinct_words(t) if inputs.has_text[i] else [] for i, t in enumerate(inputs.texts)]
    owners = np.array([i for i, ws in enumerate(vocab) for _ in ws], dtype=np.intp)
    titles = [without_words(inputs.texts[i], {w}) for i, ws in enumerate(vocab) for w in ws]
    out: list[list[tuple[str, float]]] = [[] for _ in range(len(inputs))]
    if len(owners) == 0:
        return out
    full = _margins(model.head.decision_logits(inputs), top, runner)
    varied = _margins(
        rerun_titles(model, inputs, owners, titles, encode_titles), top[owners], runner[owners]
    )
    pushes = full[owners] - varied
    start = 0
    for i, ws in enumerate(vocab):
        pairs = [(w, float(pushes[start + j])) for j, w in enumerate(ws)]
        out[i] = sorted(pairs, key=lambda p: -p[1])
        start += len(ws)
    return out


def rerun_titles(
    model: Model,
    inputs: Inputs,
    owners: np.ndarray,
    titles: list[str],
    encode_titles: TitleEncoding | None,
) -> np.ndarray:
    """The head's logits for products `owners` of `inputs` with their titles replaced by
    `titles` (photos as they were), in chunks of `VARIANT_CHUNK`."""
    parts = []
    for start in range(0, len(titles), VARIANT_CHUNK):
        rows = owners[start : start + VARIANT_CHUNK]
        chunk = titles[start : start + VARIANT_CHUNK]
        parts.append(model.head.decision_logits(_with_titles(inputs, rows, chunk, encode_titles)))
    return np.vstack(parts)


def _with_titles(
    inputs: Inputs, rows: np.ndarray, titles: list[str], encode_titles: TitleEncoding | None
) -> Inputs:
    base = inputs.subset(rows)
    has_text = np.array([t != "" for t in titles], dtype=bool)
    text = base.text
    if text is not None and text.shape[1] > 0:
        text = np.zeros_like(text)
        present = [t for t in titles if t]
        if present and encode_titles is not None:
            text[has_text] = encode_titles(present)
    return Inputs(
        texts=titles,
        image=base.image,
        text=text,
        image_mask=base.has_image,
        text_mask=has_text,
        image_activations=base.image_activations,
    )


def _linear_part(model: Model) -> tuple[Any, float] | None:
    """(the head's linear words model, its weight in the logits): a title head's own, a blend's
    words part times `1 - w`; None when the head has none (a forest, no words model)."""
    from prodcat.heads.blend import BlendHead
    from prodcat.heads.linear_arrays import LinearArrays
    from prodcat.heads.text_linear import TextLinearHead

    head = model.head
    if isinstance(head, TextLinearHead):
        part, scale = head, 1.0
    elif isinstance(head, BlendHead):
        part, scale = head.words_, 1.0 - head.weight_
    else:
        return None
    return (part, scale) if isinstance(part.model_, LinearArrays) else None


def _linear_weights(
    model: Model, inputs: Inputs, top: np.ndarray, runner: np.ndarray
) -> list[list[tuple[str, float]]]:
    """Exact contributions of the head's linear words model (`_linear_part`)."""
    found = _linear_part(model)
    if found is None:
        raise ValueError(f"the {model.head_kind} head has no linear words model")
    part, scale = found
    terms = part.vectorizer_.get_feature_names_out()  # built once per vectoriser
    X = part.vectorizer_.transform(inputs.texts)  # noqa: N806
    coef = part.model_.coef
    out: list[list[tuple[str, float]]] = []
    for i in range(len(inputs)):
        if not inputs.has_text[i]:
            out.append([])
            continue
        pushes = dict.fromkeys(distinct_words(inputs.texts[i]), 0.0)
        row = X.getrow(i)
        delta = coef[top[i], row.indices] - coef[runner[i], row.indices]
        for term, value in zip(terms[row.indices], row.data * delta * scale, strict=True):
            parts = str(term).split(" ")
            for word in parts:  # a word pair's share goes half to each word
                if word in pushes:
                    pushes[word] += float(value) / len(parts)
        out.append(sorted(pushes.items(), key=lambda p: -p[1]))
    return out


# -- photo against title --------------------------------------------------------------------------
def modality_shares(
    model: Model, inputs: Inputs, logits: np.ndarray, top: np.ndarray, runner: np.ndarray
) -> list[tuple[float | None, float | None, float | None, float | None]]:
    """Per product (photo share, title share, top probability from the photo alone, from the
    title alone); Nones for a product with one modality or a model that reads one."""
    n = len(inputs)
    both = inputs.has_image & inputs.has_text
    reads_both = model.image_encoder is not None and len(model.head.modalities) > 1
    out: list[tuple[float | None, float | None, float | None, float | None]] = [
        (None, None, None, None)
    ] * n
    if not reads_both or not both.any():
        return out
    rows = np.flatnonzero(both)
    sub = inputs.subset(rows)
    t, r, m = top[rows], runner[rows], len(rows)
    # Photo alone, title alone, neither: one pass through the head for the three.
    shown = [restrict(sub, kept) for kept in ({"image"}, {"text"}, set())]
    z = model.head.decision_logits(join_inputs(shown))
    value = {"both": _margins(logits[rows], t, r)}
    alone = {}
    for k, name in enumerate(("image", "text", "none")):
        part = z[k * m : (k + 1) * m]
        value[name] = _margins(part, t, r)
        if name != "none":
            alone[name] = model.calibrate(part, shown[k])[np.arange(m), t]
    # Shapley values of the two modalities for the score: each one's mean marginal gain.
    photo = 0.5 * ((value["image"] - value["none"]) + (value["both"] - value["text"]))
    title = 0.5 * ((value["text"] - value["none"]) + (value["both"] - value["image"]))
    total = np.maximum(np.abs(photo) + np.abs(title), 1e-12)
    for j, i in enumerate(rows):
        out[i] = (
            float(photo[j] / total[j]),
            float(title[j] / total[j]),
            float(alone["image"][j]),
            float(alone["text"][j]),
        )
    return out


# -- the deletion test ----------------------------------------------------------------------------
@dataclass
class DeletionResult:
    """How often removing words changed the answer, over products with enough words."""

    n_products: int
    top_changed: float  # share changed by removing the explanation's top words
    random_changed: float  # share changed by removing as many random words (mean of draws)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n_products": self.n_products,
            "top_changed": round(self.top_changed, 4),
            "random_changed": round(self.random_changed, 4),
        }


def deletion_test(
    model: Model,
    inputs: Inputs,
    encode_titles: TitleEncoding | None,
    *,
    method: str = WORD_METHOD,
    n_words: int = DELETED_WORDS,
    draws: int = 3,
    seed: int = 0,
) -> DeletionResult:
    """Remove each title's top `n_words` words (by the explanation) and, `draws` times, as many
    random ones; products whose title has more than `n_words` distinct words count."""
    logits = model.head.decision_logits(inputs)
    top, runner = _top_two(logits)
    weights = word_weights(model, inputs, encode_titles, top, runner, method=method)
    rows = [i for i, ws in enumerate(weights) if len(ws) > n_words]
    if not rows:
        return DeletionResult(0, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    owners = np.array(rows * (1 + draws), dtype=np.intp)
    titles = [without_words(inputs.texts[i], {w for w, _ in weights[i][:n_words]}) for i in rows]
    for _ in range(draws):
        for i in rows:
            chosen = rng.choice(len(weights[i]), n_words, replace=False)
            titles.append(without_words(inputs.texts[i], {weights[i][j][0] for j in chosen}))
    answers = rerun_titles(model, inputs, owners, titles, encode_titles).argmax(axis=1)
    changed = answers != top[owners]
    n = len(rows)
    return DeletionResult(n, float(changed[:n].mean()), float(changed[n:].mean()))


# -- helpers --------------------------------------------------------------------------------------
def _top_two(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best and second-best class (-1 when there is a single class)."""
    z = np.asarray(logits)
    if z.shape[1] < 2:
        return z.argmax(axis=1), np.full(len(z), -1)
    order = np.argsort(-z, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def _margins(logits: np.ndarray, top: np.ndarray, runner: np.ndarray) -> np.ndarray:
    """The top class's logit minus the runner-up's, per row."""
    rows = np.arange(len(logits))
    z = np.asarray(logits, dtype=np.float64)
    return z[rows, top] - np.where(runner >= 0, z[rows, np.maximum(runner, 0)], 0.0)
