"""The FastAPI app: thin routes over `ServicePredictor`; every bad input answers 4xx with a reason.

Routes: POST /v1/predict (multipart `image` + `title`, or JSON `title` + `image_base64`),
POST /v1/predict/batch, GET /v1/model, GET /healthz, GET /metrics. When `Settings.api_keys` is set,
every /v1 route needs one of them in the `Settings.api_key_header` header.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodcat import __version__

from .explanations import ExplainFlag, explanation_out
from .metrics import Metrics, MetricsMiddleware
from .multipart import MultipartError, parse_multipart
from .predictor import InputError, ServiceAnswer, ServicePredictor, decode_base64
from .schemas import (
    BatchIn,
    BatchItemOut,
    BatchOut,
    ErrorOut,
    HealthOut,
    ModelOut,
    PredictionOut,
    ProductIn,
    Suggestion,
    TimingsOut,
)
from .settings import Settings

Body = TypeVar("Body", ProductIn, BatchIn)
MULTIPART_FIELDS = ("id", "title", "image")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": description}
    for code, description in {
        400: "The body cannot be read (malformed JSON or multipart).",
        401: "A valid API key is needed (only when the service is configured with keys).",
        413: "The body or the photo is over the size limit.",
        415: "The Content-Type is not one the route reads.",
        422: "A field is missing or invalid; `field` names it.",
    }.items()
}


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over the limit of {limit:,} bytes")


class BodyLimit:
    """Refuse bodies over `limit` bytes: by Content-Length up front, else while they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            body = ErrorOut(detail=str(BodyTooLargeError(self.limit)), field=None)
            response = JSONResponse(body.model_dump(), status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLargeError(self.limit)
            return message

        await self.app(scope, limited, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (default: from PRODCAT_* environment variables / .env)."""
    settings = settings if settings is not None else Settings()  # type: ignore[call-arg]
    service = ServicePredictor(settings)
    metrics = Metrics(service.model_version)
    started = time.time()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = FastAPI(
        title="prodcat",
        version=__version__,
        summary="Product categories from a photo and a title.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.service, app.state.metrics = settings, service, metrics
    _add_error_handlers(app, metrics)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(_v1_routes(settings, service, metrics))

    @app.get("/healthz", tags=["service"])
    async def healthz() -> HealthOut:
        """The service is up and its model loaded."""
        return HealthOut(
            status="ok", model_version=service.model_version, uptime_s=time.time() - started
        )

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics: requests, latencies, decisions, errors, micro-batch sizes, and
        the drift alarm over the recent products (`prodcat_drift` and its per-signal tests)."""
        report = await run_in_threadpool(service.drift_report)
        metrics.set_drift(report, len(service.window) if service.window is not None else 0)
        return Response(metrics.render(), media_type=metrics.content_type)

    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


# -- /v1 -----------------------------------------------------------------------------------------


def _v1_routes(settings: Settings, service: ServicePredictor, metrics: Metrics) -> APIRouter:
    key_header = APIKeyHeader(
        name=settings.api_key_header,
        auto_error=False,
        description="Needed when the service is configured with API keys.",
    )

    async def require_key(request: Request) -> None:
        if not settings.api_keys:
            return
        key = request.headers.get(settings.api_key_header)
        if not key:
            raise HTTPException(
                401, f"missing API key: send it in the {settings.api_key_header} header"
            )
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
            raise HTTPException(401, f"the API key in {settings.api_key_header} is not valid")

    router = APIRouter(
        prefix="/v1",
        # key_header documents the header in the OpenAPI schema; require_key checks it.
        dependencies=[Depends(key_header), Depends(require_key)],
        responses=ERROR_RESPONSES,
    )

    @router.post(
        "/predict",
        tags=["predict"],
        openapi_extra={"requestBody": _predict_body()},
    )
    async def predict(request: Request, explain: ExplainFlag = False) -> PredictionOut:
        """One product: multipart (`image` file, `title`, `id`) or JSON (`title`,
        `image_base64`, `id`). Either the title or the photo may be missing, not both."""
        received = time.perf_counter()
        item, image_field = await _read_product(request, service, explain)
        answer = await service.answer_product(item, image_field)
        metrics.count_decisions([answer])
        return _prediction_out(answer, service, received)

    @router.post(
        "/predict/batch",
        tags=["predict"],
        openapi_extra={"requestBody": _json_body("BatchIn")},
    )
    async def predict_batch(request: Request, explain: ExplainFlag = False) -> BatchOut:
        """Up to `max_batch_items` products as JSON; each is answered or given its own error."""
        received = time.perf_counter()
        _check_content_type(request, ("application/json",))
        batch = _validate(BatchIn, await request.body())
        if len(batch.items) > settings.max_batch_items:
            raise InputError(
                f"the batch has {len(batch.items):,} items; the limit is "
                f"{settings.max_batch_items:,} per call: split it",
                field="items",
                status=413,
            )
        results: list[BatchItemOut] = [BatchItemOut(index=i) for i in range(len(batch.items))]
        good: list[int] = []
        items = []
        for i, product in enumerate(batch.items):
            try:
                items.append(_json_item(product, service, f"items[{i}].", explain))
                good.append(i)
            except InputError as exc:
                results[i].error = ErrorOut(detail=str(exc), field=exc.field)
                metrics.count_item_error(exc.field)
        prepared = await run_in_threadpool(service.predictor.prepare, items)
        for position, message in prepared.errors.items():
            i = good[position]
            field = f"items[{i}].image_base64"
            detail = f"{field}: {message.removeprefix('image: ')}"
            results[i].error = ErrorOut(detail=detail, field=field)
            metrics.count_item_error(field)
        ok = [p for p in range(len(items)) if p not in prepared.errors]
        if ok:
            subset = _subset(prepared, ok)
            answers = await service.answer(subset)
            metrics.count_decisions(answers)
            for p, answer in zip(ok, answers, strict=True):
                results[good[p]].prediction = _prediction_out(answer, service, received)
        n_errors = sum(r.error is not None for r in results)
        return BatchOut(
            items=results,
            n_ok=len(results) - n_errors,
            n_errors=n_errors,
            model_version=service.model_version,
        )

    @router.get("/model", tags=["model"])
    async def model_info() -> ModelOut:
        """The model: classes, taxonomy, encoders and their versions, figures, limits."""
        model = service.model
        return ModelOut(
            model_version=service.model_version,
            head=model.head_kind,
            classes=model.classes,
            taxonomy=model.taxonomy.to_json(),
            encoders={"image": model.image_encoder, "text": model.text_encoder},
            encoder_versions=model.encoder_versions,
            figures=model.figures,
            training_data_fingerprint=model.fingerprint,
            prodcat_version=__version__,
            accept_threshold=model.accept_threshold,
            limits={
                "max_request_bytes": settings.max_request_bytes,
                "max_image_bytes": settings.max_image_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_title_chars": settings.max_title_chars,
                "max_batch_items": settings.max_batch_items,
            },
        )

    return router


async def _read_product(
    request: Request, service: ServicePredictor, explain: bool = False
) -> tuple[Any, str]:
    """The product of a /v1/predict request and the name of its photo field."""
    kind = _check_content_type(request, ("multipart/form-data", "application/json"))
    body = await request.body()
    if kind == "application/json":
        return _json_item(_validate(ProductIn, body), service, explain=explain), "image_base64"
    try:
        parts = parse_multipart(body, request.headers["content-type"])
        unknown = sorted(set(parts) - set(MULTIPART_FIELDS))
        if unknown:
            raise InputError(
                f"unexpected field(s) {unknown}; expected {list(MULTIPART_FIELDS)}",
                field=unknown[0],
            )
        title = parts["title"].text() if "title" in parts else None
        pid = parts["id"].text() if "id" in parts else None
    except MultipartError as exc:
        raise InputError(str(exc), status=400) from None
    image = parts.get("image")
    if image is not None and image.filename is None:
        raise InputError(
            "the field 'image' is not a file part; send the photo as a file (filename=...)",
            field="image",
        )
    image_bytes = image.data if image else None
    return service.product_input(pid, title, image_bytes, explain=explain), "image"


def _json_item(
    product: ProductIn, service: ServicePredictor, prefix: str = "", explain: bool = False
) -> Any:
    image = None
    if product.image_base64 is not None:
        image = decode_base64(
            product.image_base64, service.settings.max_image_bytes, field=f"{prefix}image_base64"
        )
    return service.product_input(product.id, product.title, image, prefix=prefix, explain=explain)


def _check_content_type(request: Request, accepted: tuple[str, ...]) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in accepted:
        raise InputError(
            f"Content-Type {kind or '(none)'!r} is not accepted here; send "
            + " or ".join(accepted),
            field="Content-Type",
            status=415,
        )
    return kind


def _validate(model: type[Body], body: bytes) -> Body:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        where = f"{location}: " if location else ""
        status = 400 if first["type"] == "json_invalid" else 422
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InputError(
            f"{where}{first['msg']}{more}; expected {_expected(model)}",
            field=location or None,
            status=status,
        ) from None


def _expected(model: type[ProductIn] | type[BatchIn]) -> str:
    if model is ProductIn:
        return 'a JSON object {"title": "...", "image_base64": "...", "id": "..."}'
    return 'a JSON object {"items": [{"title": "...", "image_base64": "..."}, ...]}'


def _subset(prepared: Any, positions: list[int]) -> Any:
    from prodcat.model.predictor import Prepared

    decoded_positions = {p: i for i, p in enumerate(prepared.decoded.nonzero()[0])}
    rows = [decoded_positions[p] for p in positions if p in decoded_positions]
    return Prepared(
        items=[prepared.items[p] for p in positions],
        pixels=None if not rows else prepared.pixels[rows],
        decoded=prepared.decoded[positions],
        decode_ms=prepared.decode_ms,
    )


def _prediction_out(
    answer: ServiceAnswer, service: ServicePredictor, received: float
) -> PredictionOut:
    p = answer.prediction
    levels = p.top[0][0].split(" > ") if p.top else []
    return PredictionOut(
        id=p.id or None,
        category=p.category,
        path=p.category.split(" > "),
        probability=p.probability,
        level_probabilities=[
            Suggestion(category=" > ".join(levels[: i + 1]), probability=value)
            for i, value in enumerate(p.level_probabilities)
        ],
        top=[Suggestion(category=c, probability=v) for c, v in p.top],
        decision=p.decision,  # type: ignore[arg-type]
        ood_score=p.ood_score,
        modalities=p.modalities,  # type: ignore[arg-type]
        model_version=service.model_version,
        timings=TimingsOut(
            **answer.timings, total_ms=round((time.perf_counter() - received) * 1000, 3)
        ),
        explanation=explanation_out(p.explanation),
    )


# -- errors ---------------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def error(status: int, detail: str, field: str | None = None) -> JSONResponse:
        return JSONResponse(ErrorOut(detail=detail, field=field).model_dump(), status_code=status)

    async def input_error(_: Request, exc: Exception) -> Response:
        # Starlette types handlers with Exception; this one is registered for InputError only.
        checked = cast(InputError, exc)
        return error(checked.status, str(checked), checked.field)

    async def http_error(_: Request, exc: Exception) -> Response:
        checked = cast(StarletteHTTPException, exc)  # registered for HTTPException only
        headers = getattr(checked, "headers", None)
        response = error(checked.status_code, str(checked.detail))
        if headers:
            response.headers.update(headers)
        return response

    async def validation_error(_: Request, exc: Exception) -> Response:
        errors = cast(RequestValidationError, exc).errors()  # registered for this type only
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        location = ".".join(str(part) for part in first["loc"])
        return error(422, f"{location}: {first['msg']}", location or None)

    async def too_large(_: Request, exc: Exception) -> Response:
        return error(413, str(exc))

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        InputError: input_error,
        HTTPException: http_error,
        RequestValidationError: validation_error,
        BodyTooLargeError: too_large,
    }
    handlers[StarletteHTTPException] = http_error
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


# -- the OpenAPI schema ------------------------------------------------------------------------


def _predict_body() -> dict[str, Any]:
    multipart = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "image": {"type": "string", "format": "binary"},
        },
        "additionalProperties": False,
    }
    body = _json_body("ProductIn")
    body["content"]["multipart/form-data"] = {"schema": multipart}
    return body


def _json_body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies the routes read themselves, with the limits."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    _, defs = models_json_schema(
        [(ProductIn, "validation"), (BatchIn, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(defs.get("$defs", {}))
    title = components["ProductIn"]["properties"]["title"]
    title["anyOf"][0]["maxLength"] = settings.max_title_chars
    components["BatchIn"]["properties"]["items"]["maxItems"] = settings.max_batch_items
    predict = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    predict["multipart/form-data"]["schema"]["properties"]["title"]["maxLength"] = (
        settings.max_title_chars
    )
    app.openapi_schema = schema
    return schema
