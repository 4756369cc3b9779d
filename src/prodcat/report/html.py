"""A static HTML report of an evaluation: one self-contained file that opens offline.

Everything a reader needs is inside ``index.html``: inline CSS, the plots as base64 PNG data URIs
and the error gallery's photos as base64 JPEG thumbnails. There is no JavaScript and nothing is
fetched, so the file can be mailed, archived beside a model or opened on a machine without network.

This file holds the page; the sections are in `sections` (scores, experiments, the model),
`class_sections` (per class) and `gate_sections` (the gate), built from `elements`. The report
reads `prodcat.training.metrics.evaluate`'s dict; a section whose input is absent is left out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import prodcat
from prodcat.report.class_sections import (
    confusion_sections,
    gallery_section,
    out_of_class_section,
    per_class_section,
)
from prodcat.report.elements import escape
from prodcat.report.gate_sections import gate_sections
from prodcat.report.sections import (
    experiments_section,
    headline_section,
    levels_section,
    model_info_section,
    model_selection_section,
)

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: #1f2933; line-height: 1.45;
  font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
  "DejaVu Sans", sans-serif; font-size: 15px; }
.container { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.subtitle { color: #616e7c; margin: 0 0 12px; font-size: 13px; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 13px; margin-bottom: 8px; }
nav a { color: #3366cc; text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid #e1e5eb; border-radius: 10px;
  padding: 18px 22px; margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 12px; }
p.note { color: #616e7c; font-size: 13px; margin: 4px 0 12px; }
p.warning { background: #fff4e5; border-left: 4px solid #e8903a; color: #7a4510; font-size: 14px;
  padding: 8px 12px; margin: 4px 0 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card { border: 1px solid #e1e5eb; border-radius: 8px; padding: 12px 14px; background: #fafbfd; }
.card .value { font-size: 26px; font-weight: 600; color: #1f3d7a; }
.card .label { font-size: 12px; color: #616e7c; text-transform: uppercase; letter-spacing: .04em; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #e1e5eb; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f0f3f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #eef6ee; }
table.key-value > tbody > tr > td:first-child { width: 22%; font-weight: 600; }
table.nested { width: auto; min-width: 50%; font-size: 12px; margin: 0; }
table.nested td { padding: 2px 8px; }
details summary { cursor: pointer; color: #3366cc; font-size: 13px; margin: 6px 0; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px;
  max-height: 320px; overflow: auto; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: 14px; }
.error { border: 1px solid #e1e5eb; border-radius: 8px; overflow: hidden; background: #fafbfd;
  font-size: 12px; }
.error img.photo, .error .missing { display: block; width: 100%; height: 180px;
  object-fit: contain; background: #fff; border-bottom: 1px solid #e1e5eb; }
.error .missing { display: flex; align-items: center; justify-content: center; color: #9aa5b1;
  background: repeating-linear-gradient(45deg, #f4f6f9, #f4f6f9 8px, #eceff3 8px, #eceff3 16px); }
.error .body { padding: 8px 10px; }
.error .title { font-weight: 600; font-size: 13px; margin-bottom: 4px; }
.error .id { color: #9aa5b1; }
.true { color: #2f7a45; }
.pred { color: #b3261e; }
.confidence { display: inline-block; margin-top: 4px; padding: 1px 7px; border-radius: 10px;
  background: #fde8e6; color: #b3261e; font-weight: 600; }
footer { color: #9aa5b1; font-size: 12px; text-align: center; }
"""


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    metrics: dict[str, Any],
    model_info: dict[str, Any],
    experiments: list[dict[str, Any]] | None = None,
    model_selection: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Args:
        out_dir: created if missing; an existing ``index.html`` there is replaced.
        title: the page heading (escaped, so any text is safe).
        metrics: `prodcat.training.metrics.evaluate`'s dict for the test part.
        model_info: shown as a key/value table (head, encoders, training time...); numbers are
            rounded and nested dicts (validation figures...) shown as small tables.
        experiments: rows of the experiment comparison, each ``{"name": str, "accuracy": float}``
            plus any other columns (macro_f1, seconds...).
        model_selection: search trials, each ``{"family": str, "params": dict,
            "val_accuracy": float}`` (e.g. a head's ``validation_report_["trials"]``).
    """
    sections = [
        ("headline", "Headline", headline_section(metrics)),
        *gate_sections(metrics),
        ("levels", "Accuracy per level", levels_section(metrics)),
        ("experiments", "Experiment comparison", experiments_section(experiments)),
        ("selection", "Model selection", model_selection_section(model_selection)),
        *confusion_sections(metrics),
        ("per-class", "Per-class precision, recall and F1", per_class_section(metrics)),
        ("errors", "Worst errors", gallery_section(metrics)),
        ("out-of-class", "Out-of-class products", out_of_class_section(metrics)),
        ("model", "Model", model_info_section(model_info)),
    ]
    shown = [(key, heading, body) for key, heading, body in sections if body is not None]
    page = _page(title, shown)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _page(title: str, sections: list[tuple[str, str, str]], kind: str = "evaluation report") -> str:
    nav = "".join(f'<a href="#{key}">{escape(heading)}</a>' for key, heading, _ in sections)
    body = "\n".join(
        f'<section id="{key}">\n<h2>{escape(heading)}</h2>\n{content}\n</section>'
        for key, heading, content in sections
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<div class="container">
<header>
<h1>{escape(title)}</h1>
<p class="subtitle">prodcat {escape(prodcat.__version__)} {escape(kind)} &middot; {stamp}</p>
<nav>{nav}</nav>
</header>
{body}
<footer>Generated by prodcat. Self-contained: no scripts, no network.</footer>
</div>
</body>
</html>
"""
