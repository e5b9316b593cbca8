"""What the OpenAPI document says beyond the routes' own models: every status code each route
can answer with its error body, request examples (the README's), the limits; and the pages
that show it, `/docs` (Swagger UI) and `/redoc`, served with their scripts and styles from
the `fastapi-offline` package, not a CDN: scoring services run where the internet is not
reachable, and FastAPI's default pages are blank there.

Checked in `make test` by schemathesis against the running app (tests/serving/
test_contract.py): the document and the service must agree.
"""

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

DOCS_ASSETS = "/docs-assets"


class ErrorItem(BaseModel):
    loc: list[str]  # e.g. ["body", "amount"], ["body", "events", "3", "event_time"]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error: a message, or for an invalid request the fields (`loc`) and why."""

    detail: str | list[ErrorItem]


class ReadyResponse(BaseModel):
    ready: bool
    champion: str | None = None
    reason: str | None = None  # why not ready


MEANINGS = {
    401: "Missing, unknown or revoked API key: send `Authorization: Bearer <key>` "
    "(answered with `WWW-Authenticate: Bearer`). Only when authentication is on "
    "(SENTINEL_API_KEYS_FILE; for /admin/* also SENTINEL_ADMIN_TOKEN).",
    403: "The key lacks this route's scope (`score`, `feedback` or `admin`); for /admin/*, "
    "admin is disabled (neither an admin key nor SENTINEL_ADMIN_TOKEN); without "
    "authentication, a request that did not arrive over loopback.",
    409: "A `transaction_id` already scored with a different body (within the dedup window): "
    "`loc` names it (in a batch, `events.{i}.transaction_id`) and `msg` what changed; nothing "
    "of the call was stored (README: Retries). A retry with the same body gets the original "
    "answer (`state: duplicate`).",
    413: "The body is larger than the route's limit (stated on its request body).",
    415: "The body is not declared `Content-Type: application/json`.",
    422: "A field is invalid: `loc` names it, `msg` says why; nothing was stored.",
    429: "Over this caller's rate limit on this route (SENTINEL_RATE_LIMITS or the key's "
    "own): `Retry-After` gives the seconds to wait. A batch takes one token per event.",
    503: "The shared state store (Redis) is down.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer these error codes."""
    return {code: {"model": ErrorResponse, "description": MEANINGS[code]} for code in codes}


SEED_REQUEST = {
    "amount": 120.0, "hour_of_day": 14, "days_since_last_txn": 1.5, "txn_count_24h": 3,
    "distinct_merchants_24h": 2, "avg_amount_7d": 95.0, "channel_online": 0,
}  # fmt: skip
RAW_EVENT = {
    "transaction_id": "t-1001", "card_id": "card0000042", "merchant_id": "m000616",
    "amount": 480.0, "event_time": "2026-03-02T14:05:00Z", "channel": "online",
    "device_id": "dev-9", "merchant_category": "electronics", "lat": 41.88, "lon": -87.63,
}  # fmt: skip
SCORE_EXAMPLES = {
    "precomputed": {"summary": "The earlier system's seven features", "value": SEED_REQUEST},
    "raw_event": {"summary": "A raw event, with online state", "value": RAW_EVENT},
}  # fmt: skip
BATCH_EXAMPLES = {"events": {"summary": "Events in order", "value": {"events": [RAW_EVENT]}}}
FEEDBACK_EXAMPLES = {
    "chargeback": {
        "summary": "A fraud reported days later",
        "value": {"transaction_id": "t-1001", "is_fraud": True,
                  "label_time": "2026-03-09T10:00:00Z"},
    }
}  # fmt: skip


def json_body(schema: dict[str, Any], limit: str, examples: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body with its limits and examples."""
    return {
        "required": True,
        "description": limit,
        "content": {"application/json": {"schema": schema, "examples": examples}},
    }


def add_docs_pages(app: FastAPI) -> None:
    """`/docs` and `/redoc` over locally served files (the app is made with both off)."""
    assets = str(files("fastapi_offline") / "static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    title = app.title
    favicon = f"{DOCS_ASSETS}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy's path prefix
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{title}: API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{favicon}",
            # No badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{title}: API",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{favicon}",
            with_google_fonts=False,
        )
