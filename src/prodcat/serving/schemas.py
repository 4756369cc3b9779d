"""The API's request and response bodies (they are the OpenAPI schema, so they document the API)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ProductIn(BaseModel):
    """One product as JSON: a title, a photo in base64, or both."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="Echoed back in the answer.")
    title: str | None = Field(default=None, description="The product title (plain text).")
    image_base64: str | None = Field(
        default=None, description="The photo file (JPEG, PNG, WebP, GIF, BMP) encoded in base64."
    )


class BatchIn(BaseModel):
    """Several products in one call; each is answered or given its own error."""

    model_config = ConfigDict(extra="forbid")

    items: list[ProductIn] = Field(description="The products, answered in this order.")


class Suggestion(BaseModel):
    category: str
    probability: float


class TimingsOut(BaseModel):
    """Milliseconds per stage; image/text/head times are those of the micro-batch it ran in."""

    decode_ms: float
    queue_ms: float
    image_ms: float
    text_ms: float
    head_ms: float
    total_ms: float
    batch_size: int = Field(description="Products encoded together with this one.")


class WordOut(BaseModel):
    word: str
    weight: float = Field(
        description="How far the word moves the score towards the answer and away from the "
        "runner-up (logit units; negative: it argues for the runner-up)."
    )


class NeighbourOut(BaseModel):
    id: str
    title: str
    category: str
    similarity: float = Field(description="Cosine similarity in the model's input space.")


class ExplanationOut(BaseModel):
    """Why the model answered this (docs/explain.md); only with `explain=true`."""

    category: str = Field(description="The category explained: the most probable leaf.")
    runner_up: str | None
    words: list[WordOut] = Field(description="The title's words, strongest push first.")
    word_method: str
    photo: float | None = Field(description="The photo's share of the decision (Shapley).")
    title: float | None = Field(description="The title's share of the decision (Shapley).")
    photo_alone: float | None = Field(description="The category's probability from the photo.")
    title_alone: float | None = Field(description="The category's probability from the title.")
    neighbours: list[NeighbourOut] = Field(description="The 3 most similar training products.")


class PredictionOut(BaseModel):
    id: str | None
    category: str = Field(description="The category path, 'Footwear > Shoes > Sports Shoes'.")
    path: list[str] = Field(description="The category path, one name per level.")
    probability: float
    level_probabilities: list[Suggestion] = Field(
        description="The probability of each level of the most probable path, root first."
    )
    top: list[Suggestion] = Field(description="The 5 most probable categories.")
    decision: Literal["accept", "review", "unknown"]
    ood_score: float | None = Field(description="Out-of-distribution score (higher: stranger).")
    modalities: list[Literal["image", "text"]] = Field(description="What the answer was made from.")
    model_version: str
    timings: TimingsOut
    explanation: ExplanationOut | None = Field(
        default=None, description="The answer's reasons, when asked for with explain=true."
    )


class ErrorOut(BaseModel):
    """What was wrong with a request, and which field."""

    detail: str
    field: str | None = None


class BatchItemOut(BaseModel):
    """One product of a batch: its answer, or the error that kept it from one."""

    index: int
    prediction: PredictionOut | None = None
    error: ErrorOut | None = None


class BatchOut(BaseModel):
    items: list[BatchItemOut]
    n_ok: int
    n_errors: int
    model_version: str


class ModelOut(BaseModel):
    model_version: str
    head: str
    classes: list[str]
    taxonomy: dict[str, Any]
    encoders: dict[str, str | None]
    encoder_versions: dict[str, str]
    figures: dict[str, Any]
    training_data_fingerprint: str
    prodcat_version: str
    accept_threshold: float
    limits: dict[str, int]


class HealthOut(BaseModel):
    status: Literal["ok"]
    model_version: str
    uptime_s: float
