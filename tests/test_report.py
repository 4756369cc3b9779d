"""write_report(): a report built from the real sample, with errors planted at known rows.

The probabilities are made by hand, not by a model, so the worst errors are known in advance:
every in-class product gets 0.9 on its true class except a few planted errors, which get a high
probability on a wrong class.
"""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from prodcat.catalogue import Catalogue
from prodcat.report.class_sections import heatmap_font_size
from prodcat.report.gate_sections import MIN_OUT_OF_CLASS
from prodcat.report.html import write_report
from prodcat.report.sections import family_label
from prodcat.taxonomy.tree import format_path
from prodcat.training.metrics import evaluate

N_CONFIDENT_ERRORS = 5  # wrong with 0.99, 0.98, ... : these are the worst errors, in this order
N_WEAK_ERRORS = 3  # wrong with 0.5: below every confident error
N_WORST = 6  # the gallery keeps the 5 confident errors and 1 weak one
HEADINGS = (
    "Headline",
    "Accuracy per level",
    "Experiment comparison",
    "Model selection",
    "Per-class precision, recall and F1",
    "Worst errors",
    "Out-of-class products",
    "Model",
)
EXPERIMENTS = [
    {"name": "text-linear", "accuracy": 0.91, "macro_f1": 0.88, "seconds": 3.5},
    {"name": "image-linear", "accuracy": 0.86, "macro_f1": 0.81, "seconds": 41.0},
    {
        "name": "fusion",
        "accuracy": 0.95,
        "macro_f1": 0.93,
        "seconds": 44.5,
        "level_accuracy": [0.97, 0.96, 0.95],
    },
]
TRIALS = [
    {"family": "l2", "params": {"C": 4.656804637919565}, "val_accuracy": 0.9, "fit_seconds": 0.4},
    {"family": "l2", "params": {"C": 10.0}, "val_accuracy": 0.93, "fit_seconds": 0.5},
    {"family": "l1", "params": {"C": 3.0}, "val_accuracy": 0.88, "fit_seconds": 1.2},
    {"family": "rf", "params": {"n_estimators": 100}, "val_accuracy": 0.85, "fit_seconds": 9.0},
]


def _sample_metrics(catalogue: Catalogue, min_class_size: int) -> tuple[dict[str, Any], list[str]]:
    """evaluate() over the sample, classes = labels with >= `min_class_size` products.

    Returns the metrics and the titles of the confident errors, worst first. The first confident
    error's photo path is made to point nowhere, so the gallery must show a placeholder for it.
    """
    assert catalogue.labelled
    products = catalogue.products
    labels = [format_path(p.label or ()) for p in products]
    sizes = Counter(labels)
    classes = sorted(c for c, n in sizes.items() if n >= min_class_size)
    index = {c: j for j, c in enumerate(classes)}
    proba = np.full((len(products), len(classes)), 0.1 / (len(classes) - 1))
    in_class = [i for i, label in enumerate(labels) if label in index]
    planted = in_class[: N_CONFIDENT_ERRORS + N_WEAK_ERRORS]
    for i, label in enumerate(labels):
        right = index.get(label, i % len(classes))
        proba[i, right] = 0.9
        if i in planted:
            rank = planted.index(i)
            wrong = (right + 1) % len(classes)
            confidence = 0.99 - 0.01 * rank if rank < N_CONFIDENT_ERRORS else 0.5
            proba[i] = (1 - confidence) / (len(classes) - 1)
            proba[i, wrong] = confidence
    images: list[str | None] = [str(p.image) if p.image else None for p in products]
    images[planted[0]] = "/no/such/photo.jpg"
    titles = [p.text for p in products]
    titles[planted[1]] = '<b>Bold</b> & "quoted" title\'s'
    metrics = evaluate(
        labels,
        proba,
        classes,
        ids=[p.id for p in products],
        titles=titles,
        images=images,
        n_worst=N_WORST,
    )
    return metrics, [titles[i] for i in planted[:N_CONFIDENT_ERRORS]]


@pytest.fixture(scope="module")
def small_report(
    sample_catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Any], list[str], Path]:
    """A full report for the sample's 20 large classes (<= 25: the heatmap case)."""
    metrics, worst_titles = _sample_metrics(sample_catalogue, min_class_size=10)
    out_dir = tmp_path_factory.mktemp("report") / "nested" / "out"
    path = write_report(
        out_dir,
        title="Sample <script>alert('x')</script> report",
        metrics=metrics,
        model_info={
            "head": "text-linear",
            "encoders": ["minilm", "effnet-lite0"],
            "n_classes": 20,
            "training_seconds": 12.5,
            "validation": {
                "accuracy": 0.9733333333333334,
                "selection": "10% holdout",
                "level_accuracy": [1.0, 0.9933333333333333, 0.9733333333333334],
                "ece_uncalibrated": 0.061477476625079436,
                "n_out_of_class": 2,
                "ood_auroc": 0.65,
            },
            "excluded_classes": {"Footwear > Shoes > Sandals": 2, "Apparel > Belts": 3},
        },
        experiments=EXPERIMENTS,
        model_selection=TRIALS,
    )
    return path.read_text(encoding="utf-8"), metrics, worst_titles, path


def test_report_is_written_with_every_section(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, metrics, _, path = small_report
    assert path.name == "index.html" and path.is_file()
    assert metrics["confusion"] is not None and metrics["n_out_of_class"] > 0
    for heading in (*HEADINGS, "Confusion matrix"):
        assert f"<h2>{html.escape(heading)}</h2>" in page
    assert "<h2>Top confusions</h2>" not in page
    assert '<img class="plot" alt="confusion matrix" src="data:image/png;base64,' in page


def test_report_is_self_contained(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, *_ = small_report
    assert "<script" not in page  # no JavaScript at all, the title's included
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # nothing fetched
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)


def test_headline_figures_and_tables(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, metrics, _, _ = small_report
    assert f'<div class="value">{100 * metrics["accuracy"]:.1f}%</div>' in page
    assert f'<div class="value">{metrics["n_out_of_class"]:,}</div>' in page
    assert '<tr class="best"><td>fusion</td><td class="num">95.0%</td>' in page
    assert "<td>97.0% / 96.0% / 95.0%</td>" in page
    assert "n_estimators=100" in page and "93.0%" in page  # model selection table
    assert "<td>minilm, effnet-lite0</td>" in page


def test_gallery_shows_the_worst_errors_escaped_with_a_placeholder(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, metrics, worst_titles, _ = small_report
    assert len(metrics["worst_errors"]) == N_WORST
    gallery = page[page.index('<div class="gallery">') :]
    # One photo path points nowhere: a placeholder instead of an <img>, and no crash.
    assert gallery.count('<img class="photo"') == N_WORST - 1
    assert gallery.count("data:image/jpeg;base64,") == N_WORST - 1
    assert gallery.count('<div class="missing">') == 1
    positions = [gallery.index(html.escape(title)) for title in worst_titles]
    assert positions == sorted(positions)  # most confident first
    assert "<b>Bold</b>" not in page
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; &quot;quoted&quot; title&#x27;s" in gallery
    assert "99.0% sure" in gallery


def test_title_is_escaped(small_report: tuple[str, dict[str, Any], list[str], Path]) -> None:
    page, *_ = small_report
    escaped = "Sample &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; report"
    assert f"<title>{escaped}</title>" in page and f"<h1>{escaped}</h1>" in page


def _section(page: str, key: str) -> str:
    """The HTML of the page's section `key` (its id)."""
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no section {key!r}"
    return match.group(1)


def test_model_section_is_a_readable_table(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, *_ = small_report
    model = _section(page, "model")
    assert "<pre>" not in model and "{" not in model  # no raw JSON
    assert "9733" not in model and "0614774" not in model  # no 16-digit floats
    assert '<td>validation</td><td><table class="nested">' in model  # nested: a small table
    assert "<tr><td>accuracy</td><td>97.3%</td></tr>" in model
    assert "<tr><td>level_accuracy</td><td>100.0% / 99.3% / 97.3%</td></tr>" in model
    assert "<tr><td>ece_uncalibrated</td><td>0.06148</td></tr>" in model  # no rate: 4 digits
    assert "<tr><td>selection</td><td>10% holdout</td></tr>" in model
    assert "<tr><td>n_out_of_class</td><td>2</td></tr>" in model
    caveat = "rests on 2 out-of-class products: too few to mean anything"
    assert f"<tr><td>ood_auroc</td><td>{caveat}</td></tr>" in model and "0.65" not in model
    assert "<tr><td>Footwear &gt; Shoes &gt; Sandals</td><td>2</td></tr>" in model
    assert "<tr><td>training_seconds</td><td>12.5 s</td></tr>" in model


def test_model_selection_says_what_the_families_are(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, *_ = small_report
    selection = html.unescape(_section(page, "selection"))
    assert (
        "4 trials, best first (l2: L2-regularised logistic regression; "
        "l1: L1-regularised logistic regression; rf: random forest)."
    ) in selection
    assert "C=4.657" in selection and "4.6568" not in selection  # parameters rounded
    # The chart's bars are labelled with the same names.
    assert family_label("l1") == "L1-regularised logistic regression (l1)"
    assert family_label("rf") == "random forest (rf)"
    assert family_label("fusion-mlp") == "fusion-mlp"  # a family without a longer name


def test_confusion_matrix_numbers_are_readable(
    small_report: tuple[str, dict[str, Any], list[str], Path],
) -> None:
    page, metrics, _, _ = small_report
    assert len(metrics["confusion"]["labels"]) == 20
    # About half a cell: smaller as classes grow, never below 7 points nor above 11.
    sizes = [heatmap_font_size(n) for n in (5, 20, 22, 25)]
    assert sizes == [11.0, 9.7, 8.8, 7.8]
    (data,) = re.findall(r'alt="confusion matrix" src="data:image/png;base64,([^"]+)"', page)
    width, height = Image.open(io.BytesIO(base64.b64decode(data))).size
    assert width <= 1026 and height < width  # the page's content width: never scaled down


def _ood_metrics(n_out_of_class: int) -> dict[str, Any]:
    return {
        "n_in_class": 130,
        "n_out_of_class": n_out_of_class,
        "ood_comparison": {
            "ood_score": {"auroc": 0.5692307692307692, "flagged_at_95": 0.0},
            "signal:text_distance": {"auroc": 0.5884615384615385, "flagged_at_95": 0.5},
        },
    }


@pytest.mark.parametrize("n_out_of_class", [2, MIN_OUT_OF_CLASS - 1])
def test_ood_section_says_when_it_rests_on_too_few_products(
    tmp_path: Path, n_out_of_class: int
) -> None:
    metrics = _ood_metrics(n_out_of_class)
    page = write_report(tmp_path, title="t", metrics=metrics, model_info={}).read_text()
    ood = _section(page, "ood")
    warning = f"rests on {n_out_of_class} out-of-class products: too few to mean anything"
    assert f'<p class="warning">This comparison {warning}' in ood
    assert f"at least {MIN_OUT_OF_CLASS} products of classes" in ood
    # The AUROCs are folded away under a summary that says they mean nothing, and not charted.
    shown, folded = ood.split("<details>", 1)
    assert "0.569" not in shown and '<td class="num">0.569</td>' in folded
    assert f"The figures over {n_out_of_class} products (not meaningful)</summary>" in folded
    assert "<img" not in ood


def test_ood_section_with_enough_products_shows_the_scores(tmp_path: Path) -> None:
    metrics = _ood_metrics(MIN_OUT_OF_CLASS)
    page = write_report(tmp_path, title="t", metrics=metrics, model_info={}).read_text()
    ood = _section(page, "ood")
    assert "too few" not in ood and "<details>" not in ood
    assert '<td class="num">0.569</td>' in ood and '<td class="num">50.0%</td>' in ood
    assert 'alt="out-of-class products flagged by each score"' in ood


def test_many_classes_get_the_top_confusions_table_and_no_optional_sections(
    sample_catalogue: Catalogue, tmp_path: Path
) -> None:
    metrics, _ = _sample_metrics(sample_catalogue, min_class_size=1)  # all 29 labels
    assert len(metrics["per_class"]) > 25 and metrics["confusion"] is None
    page = write_report(tmp_path, title="all", metrics=metrics, model_info={}).read_text()
    assert not plt.get_fignums()  # every figure was closed
    assert "<h2>Top confusions</h2>" in page and "<h2>Confusion matrix</h2>" not in page
    top = metrics["top_confusions"][0]
    assert f"<td>{html.escape(top['true'])}</td><td>{html.escape(top['pred'])}</td>" in page
    for absent in ("Experiment comparison", "Model selection", "Out-of-class products", "Model"):
        assert f"<h2>{absent}</h2>" not in page


def test_photo_that_is_no_image_gives_a_placeholder(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a jpeg")
    metrics = evaluate(
        ["A > a", "A > b", "A > b"],
        np.array([[0.2, 0.8], [0.9, 0.1], [0.7, 0.3]]),
        ["A > a", "A > b"],
        images=[str(fake), str(tmp_path), None],
    )
    page = write_report(tmp_path / "r", title="t", metrics=metrics, model_info={}).read_text()
    assert page.count('<div class="missing">') == 3
    assert '<img class="photo"' not in page


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_report_renders_in_chromium(
    small_report: tuple[str, dict[str, Any], list[str], Path], tmp_path: Path
) -> None:
    _, _, _, path = small_report
    shot = tmp_path / "shot.png"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert shot.stat().st_size > 10_000
