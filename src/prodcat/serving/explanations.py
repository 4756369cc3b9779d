"""The API's side of explanations: the `explain` query flag and the answer's `explanation` body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from .schemas import ExplanationOut, NeighbourOut, WordOut

ExplainFlag = Annotated[
    bool,
    Query(
        description="Add each answer's reasons: the title words that decided, photo against "
        "title, the 3 nearest training products (a few milliseconds per product)."
    ),
]


def explanation_out(explanation: dict[str, Any] | None) -> ExplanationOut | None:
    """The body of a prediction's explanation (`prodcat.model.explain`); the neighbours' photo
    paths are the server's files and stay out of the API."""
    if explanation is None:
        return None
    return ExplanationOut(
        **{k: v for k, v in explanation.items() if k not in ("words", "neighbours")},
        words=[WordOut(**w) for w in explanation["words"]],
        neighbours=[
            NeighbourOut(**{k: v for k, v in n.items() if k != "photo"})
            for n in explanation["neighbours"]
        ],
    )
