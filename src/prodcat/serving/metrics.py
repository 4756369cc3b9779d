"""Prometheus metrics of one worker: requests, latencies, decisions, errors, micro-batch sizes.

Each app has its own registry (tests build several apps in one process). With several uvicorn
workers each reports its own figures; scrape them per process or run one worker per container.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from prodcat.monitor import DriftReport

    from .predictor import ServiceAnswer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_version: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "prodcat_http_requests", "HTTP requests by route and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "prodcat_http_request_duration_seconds", "Time from request to response, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "prodcat_http_errors", "Requests answered with a 4xx or 5xx status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.item_errors = Counter(
            "prodcat_batch_item_errors", "Batch items refused, by the field that was wrong.",
            ["field"], registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            "prodcat_predictions", "Products answered, by decision.", ["decision"], registry=r
        )
        self.batch_size = Histogram(
            "prodcat_micro_batch_size", "Products per network call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r,
        )  # fmt: skip
        info = Gauge("prodcat_model_info", "The model served.", ["model_version"], registry=r)
        info.labels(model_version=model_version).set(1)
        self._drift_gauges(r)

    def _drift_gauges(self, r: CollectorRegistry) -> None:
        """The drift alarm over the rolling window (docs/monitoring.md), updated per scrape."""
        self.drift = Gauge(
            "prodcat_drift", "1 when the recent products differ from the validation part.",
            registry=r,
        )  # fmt: skip
        self.drift_window = Gauge(
            "prodcat_drift_window_products", "Products in the drift alarm's window.", registry=r
        )
        self.drift_p_value = Gauge(
            "prodcat_drift_p_value", "Per signal: the test's p-value (window vs validation).",
            ["signal"], registry=r,
        )  # fmt: skip
        self.drift_p_adjusted = Gauge(
            "prodcat_drift_p_adjusted", "Per signal: the Holm-adjusted p-value (alarm at alpha).",
            ["signal"], registry=r,
        )  # fmt: skip
        self.drift_statistic = Gauge(
            "prodcat_drift_statistic",
            "Per signal: KS D, chi-square, or batch share minus validation share.",
            ["signal"], registry=r,
        )  # fmt: skip

    def set_drift(self, report: DriftReport | None, window_products: int) -> None:
        """The gauges from the latest check (None: no reference, or too few products yet)."""
        self.drift_window.set(window_products)
        self.drift.set(1 if report is not None and report.drift else 0)
        if report is None:
            return
        for name, signal in report.signals.items():
            self.drift_p_value.labels(name).set(signal.p_value)
            self.drift_p_adjusted.labels(name).set(signal.p_adjusted)
            self.drift_statistic.labels(name).set(signal.statistic)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request: its count by status, its latency, and errors by status."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def count_decisions(self, answers: Sequence[ServiceAnswer]) -> None:
        for answer in answers:
            self.decisions.labels(answer.prediction.decision).inc()
        if answers:
            self.batch_size.observe(answers[0].timings["batch_size"])

    def count_item_error(self, field: str | None) -> None:
        self.item_errors.labels(_field_kind(field)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _field_kind(field: str | None) -> str:
    """'items[3].title' -> 'title': a label per kind of field, not per position."""
    return (field or "unknown").rsplit(".", 1)[-1]


class MetricsMiddleware:
    """Counts and times every HTTP request (`Metrics.observe`). Plain ASGI, not Starlette's
    BaseHTTPMiddleware, whose task group and streams per request cost CPU the networks need."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # 500 unless a response starts

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)
