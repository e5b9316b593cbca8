"""The OpenAPI document and the service agree: schemathesis, every operation, every check.

Generated requests (valid ones, and ones the schema forbids) go to the real app in process;
each answer must be one the document declares, with its declared body and content type, a
schema-valid request must be accepted and an invalid one refused. Seeded and bounded, so the
run is the same every time and fits `make test`.

Two rules no JSON Schema can state are checked explicitly instead of by the acceptance
check: a timestamp more than SENTINEL_MAX_CLOCK_SKEW_S ahead of the service's clock, and a
label_time before its event_time. Such a request must get a 422 naming the field.
"""

import atexit
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serving.api_keys import create_key
from serving.app import create_app
from serving.hot_routes import explain_requested
from serving.registry import Registry
from serving.schemas import FeedbackRequest, ScoreBatchRequest, ScoreRequest
from serving.settings import ServiceSettings
from tests.serving.bundles import publish_with_profiles

HOME = Path(tempfile.mkdtemp(prefix="contract-"))  # the app must exist when this is imported
atexit.register(shutil.rmtree, HOME, True)
publish_with_profiles(Registry(HOME / "registry"))
# Authentication on, as in production: one key with every scope, sent with every case
# (schemathesis also sends cases without it, which must get 401).
KEYS = HOME / "api-keys.json"
TOKEN = create_key(KEYS, "contract", ["score", "feedback", "admin"])
SETTINGS = ServiceSettings(home=HOME, admin_token="contract-admin-token-0123", api_keys_file=KEYS)
APP = create_app(SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def _time(value: object) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def rules_broken(body: object) -> set[str]:
    """The fields a schema-valid body breaks a time rule with (either may be named)."""
    limit = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=SETTINGS.max_clock_skew_s - 60)
    events = body.get("events") if isinstance(body, dict) else None
    broken = set()
    for item in events if isinstance(events, list) else [body]:
        if not isinstance(item, dict):
            continue
        event, label = _time(item.get("event_time")), _time(item.get("label_time"))
        if event is not None and event > limit:
            broken.add("event_time")
        if label is not None and (label > limit or (event is not None and label < event)):
            broken.add("label_time")
    return broken


@schema.parametrize()
@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_service_keeps_its_openapi_contract(case: schemathesis.Case) -> None:
    # Each case on an empty online state: a label refused for an event an earlier case
    # stored (its time, remembered for the id) is not the document's business.
    shutil.rmtree(HOME / "serving", ignore_errors=True)
    with TestClient(APP):  # the lifespan: models loaded, state ready
        fields = rules_broken(case.body) if isinstance(case.body, dict) else set()
        if case.headers and "Authorization" in case.headers:  # a generated token: a real one
            case.headers["Authorization"] = f"Bearer {TOKEN}"  # (a case without it must get 401)
        if not fields:
            case.call_and_validate()
            return
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        if valid_otherwise(case):  # the time rule is the only reason to refuse it
            assert response.status_code == 422, response.text
            detail = json.dumps(response.json()["detail"])
            assert any(field in detail for field in fields), detail


BODIES = {"/v1/score": ScoreRequest, "/v1/score/batch": ScoreBatchRequest,
          "/v1/feedback": FeedbackRequest}  # fmt: skip


def valid_otherwise(case: schemathesis.Case) -> bool:
    """True if the body is what its route's model accepts, sent as JSON."""
    model = BODIES.get(case.path)
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    if model is None or not headers.get("content-type", "application/json").startswith(
        "application/json"
    ):
        return False
    if "authorization" not in headers:  # refused before its body is read: 401
        return False
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in (case.query or {}).items()}
    if explain_requested(urlencode(query, doseq=True)) is None:
        return False
    try:
        model.model_validate_json(json.dumps(case.body))
    except ValueError:
        return False
    return True
