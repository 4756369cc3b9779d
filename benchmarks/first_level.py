"""First taxonomy level from the photo alone: variants of the head, on cached features.

    python benchmarks/first_level.py [--model /tmp/full_model] [--lite2-model /tmp/full_lite2]
        [--variants baseline,catchall,l1head,l1loss,l1loss0.3,lite02,lite02-catchall,flip,
        flip-train,saved-head] [--json out.json]

FULL and its Lite2 twin are `prodcat train ../shared/datasets/fashion-products/products.csv
--label-columns masterCategory,subCategory,articleType --min-class-count 20 --calibration-folds 0
[--image-encoder effnet-lite2] --out DIR`. Figures and their reading: docs/resolution.md.

Every variant is trained here, in one run, on fashion-products' training part as `prodcat train
... --label-columns masterCategory,subCategory,articleType --min-class-count 20` splits and
chooses it (the same head, fusion-blend seed 0, without the gate: the figures are the head's own
probabilities, so a variant and the baseline are compared on equal terms), and measured on the
validation part (the only part to choose on), the test part and fashion-hires (thumbnails and
sharp photos fitted to the model's photo side, dev and check halves as in
benchmarks/resolution.py). `--model` gives the encoders and photo side (FULL's); the saved FULL,
with its gate, is measured too, as a reference.

Variants:
- baseline: FULL's recipe, products of articleTypes under the floor left out of training
  ("saved-head": the saved model's own head, which the same recipe reproduces, without refitting).
- catchall: those products train a catch-all class of their nearest ancestor that still
  qualifies ("Accessories > Bags > (other)", else "Accessories > (other) > (other)"; an ancestor
  qualifies when its catch-all has at least the floor's products), so they teach the upper levels.
- l1head: the baseline plus a photo-only logistic regression on the first level, trained on every
  training product of a first level the model knows; the first level is the product of the two
  (the leaf answer is the baseline's).
- lite02 / lite02-catchall: the photo features of Lite0 and Lite2 side by side.
- l1loss[W]: the baseline's head trained with W (default 1) x the first level's cross-entropy
  added to its loss (the leaves' probabilities summed per first level).
- flip: the baseline head answering the mean of the photo's features and its mirror image's
  (test-time augmentation: a second photo-network pass per photo); flip-train: the same, with a
  head trained on every training photo and its mirror image as two rows.

Figures: leaf accuracy (products of a learnt class; photo only and photo + title) and the most
probable first level from the photo alone (probability summed over each first level's leaves;
products of a first level the baseline knows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps

from prodcat.catalogue import ColumnMapping, Product, load_catalogue
from prodcat.catalogue.classes import choose_classes
from prodcat.catalogue.images import load_image
from prodcat.catalogue.split import split_catalogue
from prodcat.features.cache import FeatureCache
from prodcat.heads.base import softmax
from prodcat.heads.image import fit_lr, standardiser
from prodcat.heads.inputs import Inputs, restrict
from prodcat.model.bundle import Model
from prodcat.progress import progress_bar
from prodcat.taxonomy.tree import format_path, parse_path
from prodcat.training.train import TrainOptions, make_head

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resolution import DATA as HIRES
from resolution import LEVELS, half, load_pairs

PRODUCTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fashion-products"
FLOOR = 20
OTHER = "(other)"
FLIP_STORE = Path("/tmp/first_level_flip.npz")


def catch_all(label: tuple[str, ...], kept: set[str], counts: Counter[str]) -> str | None:
    """The catch-all class of a product of a rare leaf: its subcategory's, else its first
    level's, whichever has at least FLOOR rare products; None when neither does."""
    if format_path(label) in kept:
        return format_path(label)
    for depth in (2, 1):
        name = format_path((*label[:depth], *[OTHER] * (len(label) - depth)))
        if counts[name] >= FLOOR:
            return name
    return None


def catch_all_counts(train: Sequence[Product], kept: set[str]) -> Counter[str]:
    """Rare products per candidate catch-all, after the subcategory ones take theirs."""
    rare = [p.label for p in train if p.label and format_path(p.label) not in kept]
    sub = Counter(format_path((*lb[:2], OTHER)) for lb in rare if lb)
    counts: Counter[str] = Counter({k: v for k, v in sub.items() if v >= FLOOR})
    for lb in rare:
        if lb and sub[format_path((*lb[:2], OTHER))] < FLOOR:
            counts[format_path((lb[0], OTHER, OTHER))] += 1
    return counts


def first_level_proba(proba: np.ndarray, classes: Sequence[str], firsts: list[str]) -> np.ndarray:
    """(n, len(firsts)) probability summed over each first level's classes."""
    out = np.zeros((len(proba), len(firsts)))
    index = {f: i for i, f in enumerate(firsts)}
    for k, c in enumerate(classes):
        first = parse_path(c)[0]
        if first in index:
            out[:, index[first]] += proba[:, k]
    return out


def measure(
    leaf_photo: np.ndarray,
    leaf_both: np.ndarray | None,
    level1: np.ndarray,
    classes: Sequence[str],
    firsts: list[str],
    truth: Sequence[str],
    leaf_classes: Sequence[str],
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Leaf accuracy (photo only, photo + title; products of `leaf_classes`, the baseline's, so a
    catch-all never enlarges the denominator) and first-level accuracy from the photo alone, in
    percent with their counts; `level1`: (n, len(firsts)) first-level scores."""
    known = np.array([t in set(leaf_classes) for t in truth])
    first_known = np.array([parse_path(t)[0] in firsts for t in truth])
    top_photo = np.array(classes)[leaf_photo.argmax(axis=1)]
    out: dict[str, Any] = {"n_known": int(known.sum()), "n_first_known": int(first_known.sum())}
    out["leaf_photo"] = _pct(top_photo[known] == np.array(truth)[known])
    if leaf_both is not None:
        top_both = np.array(classes)[leaf_both.argmax(axis=1)]
        out["leaf_both"] = _pct(top_both[known] == np.array(truth)[known])
    answer = np.array(firsts)[level1.argmax(axis=1)]
    first_truth = np.array([parse_path(t)[0] for t in truth])
    hits = answer[first_known] == first_truth[first_known]
    out["level1_photo"] = _pct(hits)
    out["level1_misses"] = int((~hits).sum())
    if ids is not None:
        out["level1_missed"] = [
            f"{ids[i]}: {first_truth[i]} -> {answer[i]}" for i in np.flatnonzero(first_known)[~hits]
        ]
    return out


def _pct(hits: np.ndarray) -> float:
    return round(100 * float(hits.mean()), 2) if len(hits) else float("nan")


class Data:
    """Every part's inputs (Lite0 + MiniLM, and Lite2's photo features) and true classes."""

    def __init__(self, model: Model, lite2: Model | None, cache: FeatureCache) -> None:
        mapping = ColumnMapping(label_columns=LEVELS)
        catalogue = load_catalogue(PRODUCTS / "products.csv", mapping, verify_images=False)
        parts = split_catalogue([p for p in catalogue.products if p.label])
        choice = choose_classes(
            parts["train"], parts["validation"] + parts["test"], min_class_count=FLOOR
        )
        self.kept = set(choice.learned)
        self.train = parts["train"]
        thumbs, sharps = load_pairs(HIRES)
        self.products: dict[str, list[Product]] = {
            "validation": parts["validation"],
            "test": parts["test"],
            "hires_thumb": thumbs,
            "hires_sharp": sharps,
            "train": self.train,
        }
        self.inputs: dict[str, Inputs] = {}
        self.lite2: dict[str, np.ndarray] = {}
        for name, products in self.products.items():
            self.inputs[name] = model.encode(products, cache, progress=False)[0]
            if lite2 is not None:
                self.lite2[name] = lite2.encode(products, cache, progress=False)[0].image
        self.truth = {
            n: [format_path(p.label or ()) for p in ps] for n, ps in self.products.items()
        }

    def with_lite2(self, name: str) -> Inputs:
        x = self.inputs[name]
        image = np.hstack([x.image, self.lite2[name]])
        return Inputs(x.texts, image, x.text, x.image_mask, x.text_mask)


def fit_head(x: Inputs, y: list[str], val: tuple[Inputs, list[str]]) -> Any:
    """FULL's head (fusion-blend, seed 0), fitted as `prodcat train` fits it."""
    options = TrainOptions(min_class_count=FLOOR, calibration_folds=0)
    head = make_head(options)
    keep = [i for i, c in enumerate(val[1]) if c in set(y)]
    return head.fit(x, y, eval_set=(val[0].subset(keep), [val[1][i] for i in keep]))


def evaluate(
    name: str,
    data: Data,
    head: Any,
    firsts: list[str],
    baseline_classes: list[str],
    inputs_of: Any,
    level1_extra: Any = None,
) -> dict[str, Any]:
    """A head's figures on validation, test and fashion-hires (both resolutions, each half)."""
    classes = list(head.classes_)
    out: dict[str, Any] = {"variant": name, "classes": len(classes)}
    tops: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part in ("validation", "test", "hires_thumb", "hires_sharp"):
        x = inputs_of(part)
        photo = softmax(head.decision_logits(restrict(x, {"image"})))
        both = softmax(head.decision_logits(x))
        level1 = first_level_proba(photo, classes, firsts)
        if level1_extra is not None:
            level1 = np.log(np.maximum(level1, 1e-12)) + level1_extra(part)
        truth = data.truth[part]
        pids = [p.id for p in data.products[part]]
        tops[part] = (photo.argmax(axis=1), both.argmax(axis=1))
        rows = {"all": np.arange(len(truth))}
        if part.startswith("hires"):
            ids = [p.id for p in data.products[part]]
            for h in ("dev", "check"):
                rows[h] = np.array([i for i, pid in enumerate(ids) if half(pid) == h])
        for h, r in rows.items():
            key = part if h == "all" else f"{part}_{h}"
            named = [pids[i] for i in r] if h == "all" and part.startswith("hires") else None
            rows_truth = [truth[i] for i in r]
            out[key] = measure(
                photo[r], both[r], level1[r], classes, firsts, rows_truth, baseline_classes, named
            )
            # The top leaf's own first level (`level1_*` of benchmarks/resolution.py).
            first_of_top = [parse_path(classes[k])[0] for k in tops[part][0][r]]
            scored = [i for i, t in enumerate(rows_truth) if parse_path(t)[0] in firsts]
            out[key]["level1_top_leaf"] = _pct(
                np.array([first_of_top[i] == parse_path(rows_truth[i])[0] for i in scored])
            )
    agree = [tops["hires_thumb"][k] == tops["hires_sharp"][k] for k in (0, 1)]
    out["hires_agree"] = {"photo": _pct(agree[0]), "photo+title": _pct(agree[1])}
    print(json.dumps(out), flush=True)
    return out


def flipped_features(data: Data, model: Model, parts: Sequence[str]) -> dict[str, np.ndarray]:
    """Lite0 features of each photo's mirror image (through the model's encoder, so fitted to its
    photo side), one row per product with a photo; kept in FLIP_STORE between runs (not in the
    feature cache: no encoder version names the flip)."""
    stored = dict(np.load(FLIP_STORE)) if FLIP_STORE.exists() else {}
    encoder = model.get_encoder(model.image_encoder or "effnet-lite0")
    for part in parts:
        if part in stored:
            continue
        photos = [p.image for p in data.products[part] if p.image is not None]
        rows = []
        with progress_bar(f"mirror images: {part}", len(photos)) as advance:
            for i in range(0, len(photos), 32):
                batch = [ImageOps.mirror(load_image(path)) for path in photos[i : i + 32]]
                rows.append(encoder.encode(batch))
                advance(len(batch))
        stored[part] = np.vstack(rows)
        np.savez(FLIP_STORE, **stored)
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/full_model"))
    parser.add_argument("--lite2-model", type=Path, default=Path("/tmp/full_lite2"))
    parser.add_argument("--variants", default="baseline,catchall,l1head")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = args.variants.split(",")
    cache = FeatureCache()
    model = Model.load(args.model)
    lite2 = Model.load(args.lite2_model) if any("lite02" in v for v in variants) else None
    started = time.perf_counter()
    data = Data(model, lite2, cache)
    print(f"features read in {time.perf_counter() - started:.0f} s", flush=True)
    baseline_classes = sorted(data.kept)
    firsts = sorted({parse_path(c)[0] for c in baseline_classes})
    train_idx = [i for i, p in enumerate(data.train) if format_path(p.label or ()) in data.kept]
    counts = catch_all_counts(data.train, data.kept)
    labels_all = [catch_all(p.label or (), data.kept, counts) for p in data.train]
    other_idx = [i for i, lb in enumerate(labels_all) if lb is not None]
    results: list[dict[str, Any]] = [reference(model, data, firsts, baseline_classes)]
    heads: dict[str, Any] = {}

    def train_variant(name: str, lite02: bool, catchall: bool) -> Any:
        rows = other_idx if catchall else train_idx
        x = data.with_lite2("train") if lite02 else data.inputs["train"]
        y = [labels_all[i] for i in rows] if catchall else [data.truth["train"][i] for i in rows]
        val = data.with_lite2("validation") if lite02 else data.inputs["validation"]
        t0 = time.perf_counter()
        head = fit_head(x.subset(np.array(rows)), y, (val, data.truth["validation"]))  # type: ignore[arg-type]
        print(f"{name}: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
        return head

    for variant in variants:
        lite02 = variant.startswith("lite02")
        catchall = variant.endswith("catchall")
        if variant == "saved-head":  # FULL's own head, without its gate: the baseline's twin
            heads["baseline"] = model.head
            results.append(
                evaluate(
                    variant, data, model.head, firsts, baseline_classes, data.inputs.__getitem__
                )
            )
        elif variant in ("baseline", "catchall", "lite02", "lite02-catchall"):
            heads[variant] = train_variant(variant, lite02, catchall)
            inputs_of = data.with_lite2 if lite02 else data.inputs.__getitem__
            result = evaluate(variant, data, heads[variant], firsts, baseline_classes, inputs_of)
            if catchall:
                result["catch_all_classes"] = dict(counts)
            results.append(result)
        elif variant.startswith("l1loss"):  # "l1loss" (weight 1) or "l1loss0.5"
            weight = float(variant.removeprefix("l1loss") or 1.0)
            head = fit_first_level_loss(data, train_idx, baseline_classes, firsts, weight)
            results.append(
                evaluate(variant, data, head, firsts, baseline_classes, data.inputs.__getitem__)
            )
        elif variant == "l1head":
            base = heads.get("baseline") or train_variant("baseline", False, False)
            heads["baseline"] = base
            results.append(l1head_variant(data, base, firsts, baseline_classes))
        elif variant in ("flip", "flip-train"):
            parts = ["validation", "test", "hires_thumb", "hires_sharp"]
            flips = flipped_features(
                data, model, [*parts, "train"][: 5 if "train" in variant else 4]
            )

            def flipped(part: str, flips: dict[str, np.ndarray] = flips) -> Inputs:
                x = data.inputs[part]
                image = x.image.copy()
                image[x.image_mask] = (image[x.image_mask] + flips[part]) / 2
                return Inputs(x.texts, image, x.text, x.image_mask, x.text_mask)

            if variant == "flip":
                base = heads.get("baseline") or train_variant("baseline", False, False)
                heads["baseline"] = base
            else:  # trained on every photo and its mirror image (two rows per product)
                base = fit_flipped(data, train_idx, flips["train"])
            results.append(evaluate(variant, data, base, firsts, baseline_classes, flipped))
        else:
            raise SystemExit(f"unknown variant {variant!r}")
    if args.json:
        args.json.write_text(
            json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "results": results}, indent=1)
        )


def fit_flipped(data: Data, rows: list[int], flipped_train: np.ndarray) -> Any:
    """The baseline's head trained on each training photo and its mirror image."""
    x = data.inputs["train"]
    if not x.image_mask.all():
        raise SystemExit("flip-train expects a photo for every training product")
    both = Inputs(
        x.texts + x.texts,
        np.vstack([x.image, flipped_train]),
        np.vstack([x.text, x.text]),
        np.concatenate([x.image_mask, x.image_mask]),
        np.concatenate([x.text_mask, x.text_mask]),
    )
    twice = np.array([*rows, *(np.array(rows) + len(x))])
    y = [data.truth["train"][i % len(x)] for i in twice]
    t0 = time.perf_counter()
    head = fit_head(both.subset(twice), y, (data.inputs["validation"], data.truth["validation"]))
    print(f"flip-train: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    return head


def fit_first_level_loss(
    data: Data, rows: list[int], classes: list[str], firsts: list[str], weight: float
) -> Any:
    """The baseline's head trained with a first-level term added to its loss: `weight` x the
    cross-entropy of the first level (the leaves' probabilities summed per first level). For this
    study only: the package's `Stepper` is swapped for the fit and put back."""
    import torch

    from prodcat.heads import torch_training

    groups = torch.zeros(len(classes), len(firsts))
    for k, c in enumerate(classes):
        groups[k, firsts.index(parse_path(c)[0])] = 1.0
    first_of = groups.argmax(dim=1)

    class FirstLevelStepper(torch_training.Stepper):
        def loss(self, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
            target = self.target[batch]
            proba = torch.softmax(logits, dim=1) @ groups
            first = torch.nn.functional.nll_loss(
                torch.log(proba.clamp_min(1e-12)), first_of[target]
            )
            return self.loss_fn(logits, target) + weight * first

    x, y = data.inputs["train"], [data.truth["train"][i] for i in rows]
    original = torch_training.Stepper
    torch_training.Stepper = FirstLevelStepper  # type: ignore[misc]
    try:
        t0 = time.perf_counter()
        head = fit_head(
            x.subset(np.array(rows)), y, (data.inputs["validation"], data.truth["validation"])
        )
        print(f"l1loss: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        torch_training.Stepper = original  # type: ignore[misc]
    return head


def l1head_variant(
    data: Data, base: Any, firsts: list[str], baseline_classes: list[str]
) -> dict[str, Any]:
    """A first-level logistic regression on the photo (every training product of a known first
    level, C by validation accuracy), multiplied into the baseline's first-level probability."""
    train = data.inputs["train"]
    y = np.array([parse_path(t)[0] for t in data.truth["train"]])
    rows = np.flatnonzero(np.isin(y, firsts) & train.image_mask)
    mean, scale = standardiser(train.image[rows])
    val = data.inputs["validation"]
    vy = np.array([parse_path(t)[0] for t in data.truth["validation"]])
    vrows = np.flatnonzero(np.isin(vy, firsts) & val.image_mask)
    best: tuple[float, Any] = (-1.0, None)
    for c in (0.001, 0.01, 0.1):
        lr = fit_lr((train.image[rows] - mean) / scale, y[rows], c, 1000)
        score = float(np.mean(lr.predict((val.image[vrows] - mean) / scale) == vy[vrows]))
        print(f"l1head C={c}: validation {score:.4f}", flush=True)
        if score > best[0]:
            best = (score, lr)
    lr = best[1]
    order = [list(lr.classes_).index(f) for f in firsts]

    def extra(part: str) -> np.ndarray:
        x = data.inputs[part]
        return np.asarray(lr.predict_log_proba((x.image - mean) / scale))[:, order]

    return evaluate("l1head", data, base, firsts, baseline_classes, data.inputs.__getitem__, extra)


def reference(model: Model, data: Data, firsts: list[str], classes: list[str]) -> dict[str, Any]:
    """The saved model as it is (with its gate), on the same parts."""
    out: dict[str, Any] = {"variant": "saved FULL (gate-calibrated)"}
    for part in ("validation", "test", "hires_thumb", "hires_sharp"):
        x = data.inputs[part]
        photo_x = restrict(x, {"image"})
        photo = model.calibrate(model.head.decision_logits(photo_x), photo_x)
        both = model.calibrate(model.head.decision_logits(x), x)
        level1 = first_level_proba(photo, model.classes, firsts)
        truth = data.truth[part]
        out[part] = measure(photo, both, level1, model.classes, firsts, truth, classes)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
