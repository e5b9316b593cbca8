"""The FastAPI scoring service: `create_app(settings)`; `uvicorn serving.app:app` reads the env.

Thin by design: routes parse, call `Scorer` / `ModelManager` / `FeatureEngine`, and shape the
answer. The two scoring routes are answered by `serving.hot_routes` (see why there).
"""

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp

from serving import hot_routes
from serving.access_log import AccessLog
from serving.breaker import CircuitBreaker
from serving.bundle import Bundle
from serving.hot_routes import HotRoutes
from serving.logs import configure, log_event
from serving.openapi import (
    BATCH_EXAMPLES,
    FEEDBACK_EXAMPLES,
    SCORE_EXAMPLES,
    ReadyResponse,
    add_docs_pages,
    errors,
    json_body,
)
from serving.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.scoring import ahead_of_clock
from serving.service import Service, run_background
from serving.settings import ServiceSettings
from serving.state_store import StateStoreError
from serving.timeparse import iso

log = logging.getLogger("sentinel.serving")


EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "Also return the resolved feature vector.",
}


# For the OpenAPI description only: every key is checked by HotRoutes before a route runs
# (serving/access_control.py), so the routes never read it themselves.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key (`sentinel api-key create`), needed when SENTINEL_API_KEYS_FILE "
    "is set; for /admin/* an admin key or SENTINEL_ADMIN_TOKEN.",
)
ADMIN = [Depends(BEARER)]


def _batch_schema(max_events: int) -> dict[str, Any]:
    events = {"type": "array", "items": ScoreRequest.model_json_schema(), "maxItems": max_events}
    return {"type": "object", "required": ["events"], "properties": {"events": events}}


def invalid_field(message: str) -> RequestValidationError:
    """A 422 like pydantic's, naming the field `message` starts with ('label_time: ...')."""
    field = message.split(":", 1)[0]
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def _state_of(service: Service) -> dict[str, Any]:
    """The engine's counters and state sizes; with a shared store down, why they are
    missing (the rest of /v1/models still answers)."""
    try:
        clock = service.engine.event_clock()
        return {
            # with `clock`: the latest event time seen (ISO 8601, null before any), which
            # tells a client replaying traffic where the state's time stands
            "features": {
                **service.engine.stats(),
                "clock": iso(clock) if math.isfinite(clock) else None,
            },
            "state": service.engine.state_stats(),  # entries, limits, evictions per table
        }
    except StateStoreError as exc:
        return {"features": None, "state": {"unavailable": str(exc)}}


def profiles_of(bundle: Bundle | None) -> list[dict[str, Any]] | None:
    """A bundle's models: the profile each answers, its features and threshold."""
    if bundle is None:
        return None
    return [
        {"profile": m.profile, "features": list(m.features), "threshold": m.threshold}
        for m in bundle.models.values()
    ]


def _breaker(breaker: CircuitBreaker) -> dict[str, Any]:
    return {
        "state": str(breaker.state),
        "transitions": breaker.transitions,
        "short_circuited": breaker.short_circuited,
    }


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _endpoint(handler: hot_routes.Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        service = service_of(request)
        explain = hot_routes.explain_requested(request.url.query) is True  # checked by HotRoutes
        status, body = await handler(service, await request.body(), explain, None)
        return Response(body, status, media_type="application/json")

    return endpoint


class ScoringAPI(FastAPI):
    """FastAPI with `HotRoutes` in front of its whole middleware stack, so the two scoring
    routes skip the error, telemetry and body-limit layers (HotRoutes does those itself);
    in front of that, when SENTINEL_ACCESS_LOG asks for it, the access log."""

    access_log_every = 0  # log every n-th request; 0: no access log

    def build_middleware_stack(self) -> ASGIApp:
        stack: ASGIApp = HotRoutes(super().build_middleware_stack())
        return AccessLog(stack, self.access_log_every) if self.access_log_every else stack


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    configure(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        service.reload()
        app.state.service = service
        gc.freeze()  # the warm state is long-lived: keep full GC passes off it
        task = asyncio.create_task(run_background(service))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # it logs its errors
                await task
            service.shutdown()

    app = ScoringAPI(
        title="Sentinel-Stream scoring",
        version="1.0",
        lifespan=lifespan,
        docs_url=None,  # add_docs_pages: the same pages, without a CDN
        redoc_url=None,
    )  # the routes that read a body enforce its limit themselves: a 413 in JSON, documented
    add_docs_pages(app)
    app.access_log_every = settings.access_log_every()
    # The description says what this configuration asks: keys only when they are on.
    keyed = settings.api_keys_file is not None
    secured = ADMIN if keyed else []
    auth = (401, 403) if keyed else (403,)  # 403 without keys: not over loopback

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log_event(
            log, logging.ERROR, "unhandled_error", route=request.url.path, error=type(exc).__name__
        )  # the type only: messages may quote the body
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/health", tags=["operations"], summary="Liveness (200 even without a model)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["operations"],
        summary="Ready to score: a champion is loaded and the state store answers",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Not ready: `reason` says why"}},
    )
    async def ready(request: Request) -> JSONResponse:
        service = service_of(request)
        models = service.manager.current
        if models.champion is None:
            return JSONResponse({"ready": False, "reason": "no champion model loaded"}, 503)
        unavailable = await asyncio.to_thread(service.engine.unavailable)
        if unavailable is not None:
            return JSONResponse({"ready": False, "reason": unavailable}, 503)
        return JSONResponse({"ready": True, "champion": models.champion.version})

    # The two scoring routes are answered by HotRoutes before FastAPI sees them; these
    # declarations give them their OpenAPI description and call the same handlers.
    one_limit = f"At most {settings.max_body_bytes:,} bytes (larger: 413)."
    batch_limit = (
        f"At most {settings.max_batch_events:,} events (more: 422) and "
        f"{settings.batch_body_bytes():,} bytes (larger: 413)."
    )
    for path, handler, answer, body, summary in (
        ("/v1/score", hot_routes.score_one, ScoreResponse,
         json_body(ScoreRequest.model_json_schema(), one_limit, SCORE_EXAMPLES),
         "Score one payment: a raw event, or precomputed features"),
        ("/v1/score/batch", hot_routes.score_batch, ScoreBatchResponse,
         json_body(_batch_schema(settings.max_batch_events), batch_limit, BATCH_EXAMPLES),
         "Score events in order, as one call (each sees the ones before it)"),
    ):  # fmt: skip
        app.add_api_route(
            path,
            _endpoint(handler),
            methods=["POST"],
            response_model=answer,
            response_model_exclude_none=True,
            tags=["scoring"],
            summary=summary,
            responses=errors(*auth, 409, 413, 415, 422, 429, 503),
            dependencies=secured,
            openapi_extra={"parameters": [EXPLAIN_PARAMETER], "requestBody": body},
        )

    @app.post(
        "/v1/feedback",
        tags=["labels"],
        summary="A label: the payment was fraud (a chargeback) or not",
        response_model=FeedbackResponse,
        responses=errors(*auth, 413, 415, 422, 429, 503),
        dependencies=secured,
        openapi_extra={
            "requestBody": json_body(
                FeedbackRequest.model_json_schema(), one_limit, FEEDBACK_EXAMPLES
            )
        },
    )
    async def feedback(request: Request) -> Any:
        # Parsed as the scoring routes parse: the same 415 and 422 shapes for a bad body.
        if not hot_routes.json_content_type(request.scope["headers"]):
            return JSONResponse({"detail": hot_routes.NOT_JSON}, 415)
        raw = await hot_routes.read_body(request.receive, settings.max_body_bytes)
        if raw is None:
            return JSONResponse({"detail": hot_routes.too_large(settings.max_body_bytes)}, 413)
        try:
            label = FeedbackRequest.model_validate_json(raw)
        except ValidationError as exc:
            status, body = hot_routes.validation_error(exc)
            return Response(body, status, media_type="application/json")
        service = service_of(request)
        label_time = label.label_time.timestamp()
        # The events' guard: a label from the future must not make a card look fresh.
        now, skew = service.scorer.clock(), service.settings.max_clock_skew_s
        refused = ahead_of_clock("label_time", label_time, now, skew)
        if refused is not None:
            raise invalid_field(refused)
        try:  # refuses a label before its event's time (given, or remembered for the id)
            outcome = service.apply_label(  # journaled: survives a kill once answered
                label.transaction_id,
                label.is_fraud,
                label_time,
                label.card_id,
                label.merchant_id,
                label.event_time.timestamp() if label.event_time else None,
            )
        except ValueError as exc:
            raise invalid_field(str(exc)) from None
        except StateStoreError as exc:
            raise HTTPException(503, str(exc)) from None
        service.metrics.feedback.labels(outcome).inc()
        service.feedback_log.append(
            {
                "transaction_id": label.transaction_id,
                "is_fraud": label.is_fraud,
                "label_time": label_time,
                "received_at": time.time(),
                "outcome": outcome,
            }
        )
        service.feedback_log.write()  # before the answer
        return {"status": "accepted", "outcome": outcome}

    @app.get(
        "/v1/models",
        tags=["models"],
        summary="Champion and challenger, their profiles, breakers, canary, online state, reloads",
        responses=errors(*auth),
        dependencies=secured,
    )
    async def models(request: Request) -> dict[str, Any]:
        service = service_of(request)
        current = service.manager.current
        rejected = service.manager.last_rejected
        breaker = service.breaker
        return {
            "champion": current.champion.version if current.champion else None,
            "challenger": current.challenger.version if current.challenger else None,
            "loaded_at": current.loaded_at.isoformat() if current.loaded_at else None,
            "profiles": {  # which model answers which request shape (serving/profiles.py)
                "champion": profiles_of(current.champion),
                "challenger": profiles_of(current.challenger),
            },
            "last_rejected": None
            if rejected is None
            else {"path": rejected.path, "reason": rejected.reason, "at": rejected.at.isoformat()},
            "reloads": {
                "loaded": service.manager.counters.loaded,
                "rejected": service.manager.counters.rejected,
                "ejected": service.manager.counters.ejected,  # see last_rejected for why
            },
            "breaker": _breaker(breaker),
            "challenger_breaker": _breaker(service.challenger_breaker),
            "canary": service.canary.status(),
            "failure_policy": settings.failure_policy,
            **_state_of(service),
            "batching": {  # champion calls shared by the requests of one turn and profile
                "model_calls": service.scorer.model_calls,
                "rows": service.scorer.batcher.rows,
            },
        }

    @app.post(
        "/admin/reload",
        tags=["models"],
        summary="Reload the registry now, retrying rejected bundles",
        responses=errors(401, 403),
        dependencies=ADMIN,
    )
    async def admin_reload(request: Request) -> JSONResponse:
        service = service_of(request)
        changed = await asyncio.to_thread(service.reload, True)
        return JSONResponse({"reloaded": changed, **(await models(request))})

    @app.post(
        "/admin/canary/resume",
        tags=["models"],
        summary="Resume a stopped canary: the challenger decides its share of cards again",
        responses=errors(401, 403),
        dependencies=ADMIN,
    )
    async def admin_canary_resume(request: Request) -> JSONResponse:
        service = service_of(request)
        resumed = await asyncio.to_thread(service.canary.resume)
        return JSONResponse({"resumed": resumed, "canary": service.canary.status()})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
    )
    async def metrics(request: Request) -> Response:
        service = service_of(request)
        m = service.metrics
        with contextlib.suppress(StateStoreError):  # a shared store down: sizes unknown
            m.state.update(service.engine.state_stats())
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
