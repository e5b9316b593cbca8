"""The two scoring routes, served by a small ASGI middleware in front of FastAPI.

Why by hand: on this 2-core machine a bare ASGI handler under uvicorn answers ~33,000
requests/s and a trivial FastAPI endpoint ~10,000 (docs/BENCHMARKS.md), so FastAPI's routing,
dependency and response machinery costs ~70 µs per request, more than scoring itself
(features, two ONNX calls and the log: ~45 µs). The payment path only takes
`POST /v1/score` and `POST /v1/score/batch`; they are answered here with the raw body
validated by pydantic (`model_validate_json`) and the answer encoded by orjson. Every other
request, and the OpenAPI description of these two, goes through FastAPI as usual; the
FastAPI routes call the same handlers below.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.access_control import Caller, Refusal
from serving.access_log import RouteNames, StatusOf, route_path
from serving.features import FEATURE_NAMES
from serving.logs import log_event
from serving.resolve import ResolveError, stateful_ids
from serving.schemas import ScoreBatchRequest, ScoreRequest
from serving.scoring import EventConflict, EventError, ScoreOutcome
from serving.service import Service
from serving.state_store import StateStoreError

log = logging.getLogger("sentinel.serving")
Answer = tuple[int, bytes]


def error(status: int, detail: Any) -> Answer:
    return status, orjson.dumps({"detail": detail})


def field_error(message: str) -> Answer:
    """A 422 naming the field: `message` starts with it, as in 'amount: ...'."""
    field = message.split(":", 1)[0]
    return error(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def missing_ids(exc: ResolveError, prefix: str = "") -> Answer:
    """A 422 with one entry per missing id, each named in its own `loc`."""
    return error(
        422,
        [
            {"loc": ["body", f"{prefix}{field}"], "msg": f"{prefix}{field}: {exc.reason}",
             "type": "missing"}
            for field in exc.fields
        ],
    )  # fmt: skip


def validation_error(exc: ValidationError) -> Answer:
    detail = [
        {"loc": ["body", *(str(p) for p in e["loc"])], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    return error(422, detail)


def conflict_error(message: str, prefix: str = "") -> Answer:
    """A 409 naming the reused `transaction_id` (in a batch, `events.{i}.transaction_id`)."""
    field = prefix + message.split(":", 1)[0]
    return error(
        409, [{"loc": ["body", field], "msg": prefix + message, "type": "idempotency_conflict"}]
    )


def _answer(service: Service, outcome: ScoreOutcome, explain: bool) -> dict[str, Any]:
    body = outcome.answer
    if outcome.replayed:
        service.metrics.hot.count_replay()
    else:
        service.metrics.hot.count_outcome(body, outcome.shadow_disagrees, outcome.state)
    body["state"] = outcome.state  # added, duplicate, too_late; stateless without a card
    if explain:  # orjson writes the NaN of a missing feature as null
        body["features"] = dict(zip(FEATURE_NAMES, outcome.vector, strict=True))
    return body


class Refused(Exception):
    """A request refused with headers of its own (429 with Retry-After)."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


async def score_one(
    service: Service, raw: bytes, explain: bool, caller: Caller | None = None
) -> Answer:
    try:
        request = ScoreRequest.model_validate_json(raw)
    except ValidationError as exc:
        return validation_error(exc)
    try:
        stateful_ids(request)
    except ResolveError as exc:
        return missing_ids(exc)
    try:
        (outcome,) = await service.scorer.score_many([request])
    except StateStoreError as exc:
        return error(503, str(exc))
    except EventConflict as exc:
        return conflict_error(exc.message)
    except EventError as exc:
        return field_error(exc.message)
    return 200, orjson.dumps(_answer(service, outcome, explain))


async def score_batch(
    service: Service, raw: bytes, explain: bool, caller: Caller | None = None
) -> Answer:
    try:
        events = ScoreBatchRequest.model_validate_json(raw).events
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "events"  # not even an object
        return field_error(f"{where}: {first['msg']}")
    limit = service.settings.max_batch_events
    if len(events) > limit:
        return field_error(f"events: at most {limit} per batch")
    for i, request in enumerate(events):  # check all first: a bad batch changes no state
        try:
            stateful_ids(request)
        except ResolveError as exc:
            return missing_ids(exc, f"events.{i}.")
    refusal = service.access.charge(caller, "/v1/score/batch", len(events))  # per event
    if refusal is not None:
        raise Refused(refusal)
    try:
        outcomes = await service.scorer.score_many(events)
    except StateStoreError as exc:
        return error(503, str(exc))
    except EventConflict as exc:  # nothing of the batch was stored
        return conflict_error(exc.message, f"events.{exc.index}.")
    except EventError as exc:  # e.g. an event_time ahead of the clock: the whole batch
        return field_error(f"events.{exc.index}.{exc.message}")
    results = [_answer(service, outcome, explain) for outcome in outcomes]
    return 200, orjson.dumps({"results": results})


Handler = Callable[[Service, bytes, bool, Caller | None], Awaitable[Answer]]
HANDLERS: dict[str, Handler] = {"/v1/score": score_one, "/v1/score/batch": score_batch}


TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")  # FastAPI's booleans


def explain_requested(query: str) -> bool | None:
    """The `explain` query parameter; None when it is not a boolean (a 422 names it)."""
    values = parse_qs(query, keep_blank_values=True).get("explain")
    if values is None:
        return False
    value = values[-1].lower()
    return True if value in TRUE else False if value in FALSE else None


def json_content_type(headers: list[tuple[bytes, bytes]]) -> bool:
    """True if the request says its body is JSON (`application/json`, any parameters)."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


NOT_JSON = "Content-Type must be application/json"


def too_large(limit: int, batch: bool = False) -> str:
    setting = (
        "SENTINEL_MAX_BATCH_EVENTS x SENTINEL_MAX_EVENT_BYTES"
        if batch
        else ("SENTINEL_MAX_BODY_BYTES")
    )
    return f"body larger than {limit} bytes ({setting})"


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is larger than `limit`."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def send_answer(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": body})


class HotRoutes:
    """ASGI middleware: checks every request's key and rate limit (serving/access_control.py),
    answers POST /v1/score and /v1/score/batch, and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route = RouteNames()

    @staticmethod
    async def _respond(
        service: Service, handler: Handler, scope: Scope, receive: Receive, caller: Caller | None
    ) -> Answer:
        settings = service.settings
        batch = handler is score_batch
        limit = settings.batch_body_bytes() if batch else settings.max_body_bytes
        raw = await read_body(receive, limit)
        if raw is None:
            return error(413, too_large(limit, batch))
        query = scope["query_string"]
        explain = explain_requested(query.decode("latin-1")) if query else False
        if explain is None:
            return error(422, [{"loc": ["query", "explain"], "msg": "explain: must be a boolean "
                                "(true or false)", "type": "bool_parsing"}])  # fmt: skip
        if not json_content_type(scope["headers"]):
            return error(415, NOT_JSON)
        return await handler(service, raw, explain, caller)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Another route, through FastAPI: counted by status, timed."""
        started = time.perf_counter()
        sending = StatusOf(send, 500)  # the server answers 500 if the app raises first
        try:
            await self.app(scope, receive, sending)
        finally:
            service: Service | None = getattr(scope["app"].state, "service", None)
            if service is not None:  # None before the lifespan has started the service
                seconds = time.perf_counter() - started
                service.metrics.hot.observe_request(self._route(scope), sending.status, seconds)

    async def _refuse(
        self, scope: Scope, send: Send, service: Service, refusal: Refusal, path: str
    ) -> None:
        await send_answer(send, refusal.status, refusal.body(), refusal.headers)
        route = path if path in HANDLERS else self._route(scope)
        service.metrics.hot.count_refusal(route, refusal.status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)  # behind a proxy's prefix, what Starlette routes on
        service: Service | None = getattr(scope["app"].state, "service", None)
        caller = None
        if service is not None:  # None before the lifespan has started the service
            refusal, caller = service.access.authorize(scope, path)
            if refusal is None and path in CHARGED_ONE:
                refusal = service.access.charge(caller, path)
            if refusal is not None:
                await self._refuse(scope, send, service, refusal, path)
                return
        handler = HANDLERS.get(path)
        if handler is None or scope["method"] != "POST" or service is None:
            await self._counted(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            status, body = await self._respond(service, handler, scope, receive, caller)
        except Refused as exc:  # a batch over its limit: counted as a refusal, not timed
            refusal = exc.refusal
            await send_answer(send, refusal.status, refusal.body(), refusal.headers)
            service.metrics.hot.count_refusal(path, refusal.status)
            return
        except Exception as exc:  # outside FastAPI's error middleware: the same 500 here
            log_event(
                log, logging.ERROR, "unhandled_error", route=path, error=type(exc).__name__
            )  # the type only: messages may quote the body
            status, body = error(500, "internal error")
        await send_answer(send, status, body)
        service.metrics.hot.observe_request(path, status, time.perf_counter() - started)


# Charged one token before the body is read (a batch is charged per event once parsed).
CHARGED_ONE = frozenset({"/v1/score", "/v1/feedback"})
