"""The drift reference a model stores at training: a small summary of its validation part.

Counts for what is a share or a mix (decisions, predicted classes, photo present, title present)
and a bounded random sample for what is a distribution (confidence, OOD score, photo size): a few
kilobytes whatever the catalogue's size, never the validation products themselves. Saved as
`monitor.json` in the model folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.monitor.observations import DECISIONS, Observations

REFERENCE_FORMAT = 1
REFERENCE_FILE = "monitor.json"
# Values kept per distribution: the two-sample KS test then knows the reference to within
# ~1/sqrt(2000); more buys little power against a batch of a few hundred products.
MAX_SAMPLE = 2000
DISTRIBUTIONS = ("confidence", "ood_score", "photo_side")
DIGITS = 6  # significant digits kept per sampled value


@dataclass
class Reference:
    """What the validation part looked like to the model (see the module docstring)."""

    n: int
    # Decision -> validation products; a decision whose threshold moved since (`prodcat retune`)
    # is dropped, and then not compared.
    decisions: dict[str, int]
    class_counts: list[int]
    has_photo: int
    has_title: int
    # Distribution name -> a random sample of its finite values (at most MAX_SAMPLE) ...
    samples: dict[str, list[float]] = field(default_factory=dict)
    # ... and how many finite values there were before sampling.
    finite: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        observations: Observations,
        n_classes: int,
        *,
        seed: int = 0,
        max_sample: int = MAX_SAMPLE,
    ) -> Reference:
        """Summarise `observations` (the validation part) over a model of `n_classes` classes."""
        obs = observations
        if len(obs) == 0:
            raise ValueError("a drift reference needs at least one validation product; got none")
        if obs.predicted.size and (obs.predicted.min() < 0 or obs.predicted.max() >= n_classes):
            raise ValueError(
                f"predicted class indices run {obs.predicted.min()}..{obs.predicted.max()}; "
                f"expected 0..{n_classes - 1}"
            )
        rng = np.random.default_rng(seed)
        samples, finite = {}, {}
        for name in DISTRIBUTIONS:
            values = getattr(obs, name)
            values = values[np.isfinite(values)]
            finite[name] = len(values)
            if len(values) > max_sample:
                values = rng.choice(values, size=max_sample, replace=False)
            samples[name] = [float(f"{v:.{DIGITS}g}") for v in np.sort(values)]
        return cls(
            n=len(obs),
            decisions={d: int(np.sum(obs.decisions == d)) for d in DECISIONS},
            class_counts=np.bincount(obs.predicted, minlength=n_classes).astype(int).tolist(),
            has_photo=int(obs.has_photo.sum()),
            has_title=int(obs.has_title.sum()),
            samples=samples,
            finite=finite,
        )

    def sample(self, name: str) -> np.ndarray:
        return np.asarray(self.samples.get(name, []), dtype=np.float64)

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "n": self.n,
            "decisions": self.decisions,
            "class_counts": self.class_counts,
            "has_photo": self.has_photo,
            "has_title": self.has_title,
            "finite": self.finite,
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, config: dict[str, Any], source: str = "the reference") -> Reference:
        if config.get("format") != REFERENCE_FORMAT:
            raise ValueError(
                f"{source} has format {config.get('format')!r}; this prodcat reads format "
                f"{REFERENCE_FORMAT}: retrain the model to store a new reference"
            )
        needed = ("n", "decisions", "class_counts", "has_photo", "has_title")
        missing = [k for k in needed if k not in config]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}; expected a saved Reference")
        return cls(
            n=int(config["n"]),
            decisions={d: int(n) for d, n in config["decisions"].items() if d in DECISIONS},
            class_counts=[int(c) for c in config["class_counts"]],
            has_photo=int(config["has_photo"]),
            has_title=int(config["has_title"]),
            samples={k: [float(v) for v in vs] for k, vs in config.get("samples", {}).items()},
            finite={k: int(v) for k, v in config.get("finite", {}).items()},
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        path = Path(path)
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            message = f"{path} is not valid JSON ({exc}); expected a drift reference"
            raise ValueError(message) from None
        return cls.from_json(config, str(path))


__all__ = ["DISTRIBUTIONS", "MAX_SAMPLE", "REFERENCE_FILE", "Reference"]
