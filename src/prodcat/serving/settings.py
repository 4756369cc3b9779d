"""Service settings from environment variables (PRODCAT_*) or a .env file, via pydantic-settings.

Tests build `Settings(...)` directly and pass it to `create_app`, overriding anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from prodcat.catalogue.images import MAX_PIXELS


class Settings(BaseSettings):
    """What the service loads and the limits it enforces on every request."""

    model_config = SettingsConfigDict(env_prefix="PRODCAT_", env_file=".env", extra="ignore")

    model_dir: Path = Field(description="The model directory written by `prodcat train`.")
    # Comma-separated in the environment: PRODCAT_API_KEYS=key1,key2. Empty: no keys needed.
    api_keys: Annotated[frozenset[str], NoDecode] = frozenset()
    api_key_header: str = "X-API-Key"
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=MAX_PIXELS, ge=1)
    max_title_chars: int = Field(default=2000, ge=1)
    max_batch_items: int = Field(default=64, ge=1)
    # Micro-batching: requests that queue while the networks are busy are encoded together in the
    # next batch; a request that finds them idle runs at once. While every core is busy (network
    # calls wait for a worker), a new batch keeps gathering requests, looking again every
    # `gather_poll_ms` (0: never gather): it could not start sooner anyway, and bigger batches cost
    # less per product. A window > 0 also holds an idle batch open that long for company: 0 by
    # default, as that wait only adds latency (issue 19).
    gather_poll_ms: float = Field(default=2.0, ge=0)
    batch_window_ms: float = Field(default=0.0, ge=0)
    max_micro_batch: int = Field(default=32, ge=1)
    min_confidence: float | None = Field(default=None, gt=0, le=1)
    warm_up: bool = True
    # The drift alarm (`/metrics`): the last `drift_window` products answered are compared with
    # the model's validation part once at least `drift_min_products` have come; `drift_alpha` is
    # the false-alarm rate per check over all signals together (docs/monitoring.md).
    drift_window: int = Field(default=1000, ge=1)
    drift_min_products: int = Field(default=200, ge=1)
    drift_alpha: float = Field(default=0.01, gt=0, lt=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(k.strip() for k in value.split(",") if k.strip())
        return value
