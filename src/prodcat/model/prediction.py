"""The prediction record: what prodcat answers for one product, whichever interface asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOP_K = 5


@dataclass
class Prediction:
    """One product's answer: the category, its probability, each level's and the top-k paths."""

    id: str
    category: str
    probability: float
    level_probabilities: list[float]
    top: list[tuple[str, float]]
    decision: str = "review"
    ood_score: float | None = None
    modalities: list[str] = field(default_factory=list)  # what the answer was made from
    error: str | None = None
    # Why (`prodcat.model.explain`), when asked for: words, photo / title shares, neighbours.
    explanation: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        explained = {} if self.explanation is None else {"explanation": self.explanation}
        return {
            "id": self.id,
            "category": self.category,
            "probability": self.probability,
            "level_probabilities": self.level_probabilities,
            "top": [{"category": c, "probability": p} for c, p in self.top],
            "decision": self.decision,
            "ood_score": self.ood_score,
            "modalities": self.modalities,
            "error": self.error,
            **explained,
        }
