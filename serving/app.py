"""The FastAPI scoring service: `create_app(settings)`; `uvicorn serving.app:app` reads the env.

Thin by design: routes parse, call `Scorer` / `ModelManager` / `FeatureEngine`, and shape the
answer. The hot route validates the raw body with `model_validate_json` (no FastAPI body
parameter) and answers with a pre-built `Response`.
"""

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from serving.breaker import CircuitBreaker
from serving.feature_engine import FeatureEngine
from serving.features import FEATURE_NAMES
from serving.metrics import ServiceMetrics
from serving.models import ModelManager
from serving.resolve import check_stateful_fields
from serving.schemas import FeedbackRequest, ScoreRequest, ScoreResponse
from serving.scored_log import ScoredLog
from serving.scoring import NoModelError, Scorer
from serving.settings import ServiceSettings

log = logging.getLogger("sentinel.serving")
STATE_SNAPSHOT = "feature_state.pkl"


EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "Also return the resolved feature vector.",
}


def _explain(request: Request) -> bool:
    return request.query_params.get("explain", "false").lower() in ("1", "true", "yes")


def _nan_to_none(vector: list[float]) -> dict[str, float | None]:
    return {n: (None if v != v else float(v)) for n, v in zip(FEATURE_NAMES, vector, strict=True)}


def _validation_error(exc: ValidationError | RequestValidationError) -> JSONResponse:
    detail = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _field_error(message: str) -> JSONResponse:
    """A ValueError from the engine starts with the field's name: 'amount: ...'."""
    field = message.split(":", 1)[0]
    return JSONResponse(
        {"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]},
        status_code=422,
    )


class Service:
    """Everything one app instance holds, built in the lifespan."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.manager = ModelManager(settings)
        self.snapshot_path = settings.home / "serving" / STATE_SNAPSHOT
        self.engine = self._restore_engine()
        self.breaker = CircuitBreaker(settings.breaker_config())
        self.log = ScoredLog(settings.home / "scored")
        self.feedback_log = ScoredLog(settings.home / "scored", prefix="feedback")
        self.scorer = Scorer(settings, self.manager, self.engine, self.breaker, self.log)

    def _restore_engine(self) -> FeatureEngine:
        """The state saved at the last shutdown; a missing or unreadable one starts cold."""
        if not self.snapshot_path.exists():
            return FeatureEngine()
        try:
            return FeatureEngine.restore(self.snapshot_path)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("feature state not restored, starting cold: %s", exc)
            return FeatureEngine()

    def reload(self, retry_rejected: bool = False) -> bool:
        before = self.manager.counters.loaded, self.manager.counters.rejected
        changed = self.manager.reload(retry_rejected)
        loaded, rejected = self.manager.counters.loaded, self.manager.counters.rejected
        self.metrics.reloads.labels("loaded").inc(loaded - before[0])
        self.metrics.reloads.labels("rejected").inc(rejected - before[1])
        models = self.manager.current
        self.metrics.model_info.info(
            {
                "champion": models.champion.version if models.champion else "",
                "challenger": models.challenger.version if models.challenger else "",
            }
        )
        return changed


async def _background(service: Service) -> None:
    """Poll the registry and flush the logs, off the request path."""
    interval = service.settings.reload_interval_s
    last_reload = time.monotonic()
    while True:
        await asyncio.sleep(min(1.0, interval))
        service.log.flush()
        service.feedback_log.flush()
        if time.monotonic() - last_reload >= interval:
            last_reload = time.monotonic()
            await asyncio.to_thread(service.reload)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        service.reload()
        app.state.service = service
        gc.freeze()  # the warm state is long-lived: keep full GC passes off it
        task = asyncio.create_task(_background(service))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            service.log.flush()
            service.feedback_log.flush()
            service.engine.snapshot(service.snapshot_path)

    app = FastAPI(title="Sentinel-Stream scoring", version="1.0", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(Exception)
    async def on_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__)  # no payloads, no card data
        return JSONResponse({"detail": "internal error"}, status_code=500)

    def service_of(request: Request) -> Service:
        service: Service = request.app.state.service
        return service

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        models = service_of(request).manager.current
        if models.champion is None:
            return JSONResponse({"ready": False, "reason": "no champion model loaded"}, 503)
        return JSONResponse({"ready": True, "champion": models.champion.version})

    def _too_large(body: bytes) -> JSONResponse | None:
        if len(body) > settings.max_body_bytes:
            limit = settings.max_body_bytes
            return JSONResponse({"detail": f"body larger than {limit} bytes"}, 413)
        return None

    async def _score_one(service: Service, fields: dict[str, Any], explain: bool) -> Any:
        outcome = await service.scorer.score(fields)
        metrics = service.metrics
        metrics.decisions.labels(outcome.decision).inc()
        metrics.scored_by.labels(outcome.scored_by).inc()
        if outcome.shadow_disagrees:  # judged on the same models the request used
            metrics.shadow_disagreements.inc()
        body: dict[str, Any] = {
            "fraud_probability": outcome.probability,
            "decision": outcome.decision,
            "threshold": outcome.threshold,
            "circuit_breaker_state": "closed" if outcome.scored_by == "model" else "open",
            "model_version": outcome.model_version,
            "scored_by": outcome.scored_by,
            "reasons": outcome.reasons,
        }
        if outcome.shadow_probability is not None:
            body["shadow_fraud_probability"] = outcome.shadow_probability
        if explain:
            body["features"] = _nan_to_none(outcome.vector)
        return body

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        response_model_exclude_none=True,
        openapi_extra={"parameters": [EXPLAIN_PARAMETER]},
    )
    async def score(request: Request) -> Response:
        # Only `request` as a parameter: FastAPI then resolves no dependencies per call.
        started = time.perf_counter()
        explain = _explain(request)
        service = service_of(request)
        raw = await request.body()
        if (too_large := _too_large(raw)) is not None:
            return too_large
        try:
            fields = ScoreRequest.model_validate_json(raw).model_dump(exclude_none=True)
        except ValidationError as exc:
            return _validation_error(exc)
        try:
            body = await _score_one(service, fields, explain)
        except NoModelError as exc:
            return JSONResponse({"detail": str(exc)}, 503)
        except ValueError as exc:
            return _field_error(str(exc))
        service.metrics.latency.labels("/v1/score").observe(time.perf_counter() - started)
        return Response(json.dumps(body), media_type="application/json")

    @app.post("/v1/score/batch")
    async def score_batch(request: Request, explain: Annotated[bool, Query()] = False) -> Response:
        started = time.perf_counter()
        service = service_of(request)
        raw = await request.body()
        if (too_large := _too_large(raw)) is not None:
            return too_large
        try:
            payload = json.loads(raw)
        except ValueError:
            return _field_error("events: body is not JSON")
        events = payload.get("events") if isinstance(payload, dict) else None
        if not isinstance(events, list):
            return _field_error('events: expected {"events": [...]}')
        if len(events) > settings.max_batch_events:
            return _field_error(f"events: at most {settings.max_batch_events} per batch")
        # Validate every event before scoring any: a bad batch changes no state.
        batch = []
        for i, event in enumerate(events):
            try:
                fields = ScoreRequest.model_validate(event).model_dump(exclude_none=True)
                check_stateful_fields(fields)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                return _field_error(f"events.{i}.{where}: {first['msg']}")
            except ValueError as exc:
                return _field_error(f"events.{i}.{exc}")
            batch.append(fields)
        results = []
        for i, fields in enumerate(batch):  # in order: each sees the state of the ones before
            try:
                results.append(await _score_one(service, fields, explain))
            except NoModelError as exc:
                return JSONResponse({"detail": str(exc)}, 503)
            except ValueError as exc:
                return _field_error(f"events.{i}.{exc}")
        service.metrics.latency.labels("/v1/score/batch").observe(time.perf_counter() - started)
        return Response(json.dumps({"results": results}), media_type="application/json")

    @app.post("/v1/feedback")
    async def feedback(request: Request, label: FeedbackRequest) -> dict[str, str]:
        service = service_of(request)
        outcome = service.engine.apply_label(
            label.transaction_id,
            label.is_fraud,
            label.label_time.timestamp(),
            label.card_id,
            label.merchant_id,
            label.event_time.timestamp() if label.event_time else None,
        )
        service.metrics.feedback.labels(outcome).inc()
        service.feedback_log.append(
            {
                "transaction_id": label.transaction_id,
                "is_fraud": label.is_fraud,
                "label_time": label.label_time.timestamp(),
                "received_at": time.time(),
                "outcome": outcome,
            }
        )
        return {"status": "accepted", "outcome": outcome}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        service = service_of(request)
        current = service.manager.current
        rejected = service.manager.last_rejected
        breaker = service.breaker
        return {
            "champion": current.champion.version if current.champion else None,
            "challenger": current.challenger.version if current.challenger else None,
            "loaded_at": current.loaded_at.isoformat() if current.loaded_at else None,
            "last_rejected": None
            if rejected is None
            else {"path": rejected.path, "reason": rejected.reason, "at": rejected.at.isoformat()},
            "reloads": {
                "loaded": service.manager.counters.loaded,
                "rejected": service.manager.counters.rejected,
            },
            "breaker": {
                "state": str(breaker.state),
                "transitions": breaker.transitions,
                "short_circuited": breaker.short_circuited,
            },
            "features": service.engine.stats(),
        }

    @app.post("/admin/reload")
    async def admin_reload(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        if authorization is None or not authorization.startswith("Bearer "):
            return JSONResponse({"detail": "missing bearer token"}, 401)
        token = settings.admin_token
        given = authorization.removeprefix("Bearer ")
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "invalid token"}, 403)
        service = service_of(request)
        changed = await asyncio.to_thread(service.reload, True)
        return JSONResponse({"reloaded": changed, **(await models(request))})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        service = service_of(request)
        m = service.metrics
        for state in ("closed", "open", "half_open"):
            m.breaker_state.labels(state).set(1.0 if str(service.breaker.state) == state else 0.0)
        for transition, count in service.breaker.transitions.items():
            m.breaker_transitions.labels(transition).set(count)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
