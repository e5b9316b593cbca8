"""Request and response bodies. The seed's fields, ranges and names are unchanged."""

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict


def _utc_if_naive(value: dt.datetime) -> dt.datetime:
    """DESIGN.md: a timestamp without a zone is UTC (never the server's local time)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: object) -> object:
    """The contract says an ISO 8601 string: a number (or a number in a string, which
    pydantic would read as epoch seconds or milliseconds) is refused, not guessed at."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an ISO 8601 date-time string, e.g. 2026-03-02T14:05:00Z")
    return value


def _json_integer(value: object) -> object:
    """JSON's integer: 7 or 7.0 (JSON Schema counts both); never true or "7"."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integers as JSON Schema means them: `true` and `"7"` are refused, 7.0 is 7. (The bounds sit
# inside the annotation: outside, pydantic would write them into the schema as "ge"/"le".)
Hour = Annotated[int, Field(ge=0, le=23), BeforeValidator(_json_integer)]
Count = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]
Flag = Annotated[int, Field(ge=0, le=1), BeforeValidator(_json_integer)]
EventTime = Annotated[dt.datetime, BeforeValidator(_not_a_number), AfterValidator(_utc_if_naive)]
# Ids are opaque, but never hold NUL: the shared state store uses it as a field separator.
ID = r"^[^\x00]+$"


# Rules across fields, said in the schema too, so that clients (and schemathesis) know:
# a card needs its event's ids; `channel` and `channel_online` must agree.
_CROSS_FIELD_RULES: JsonDict = {
    "if": {"properties": {"card_id": {"type": "string"}}, "required": ["card_id"]},
    "then": {
        "properties": {"transaction_id": {"type": "string"}, "merchant_id": {"type": "string"}},
        "required": ["transaction_id", "merchant_id"],
    },
    "not": {
        "anyOf": [
            {"properties": {"channel": {"const": "online"}, "channel_online": {"const": 0}},
             "required": ["channel", "channel_online"]},
            {"properties": {"channel": {"enum": ["pos", "atm"]}, "channel_online": {"const": 1}},
             "required": ["channel", "channel_online"]},
        ]
    }
}  # fmt: skip


class ScoreRequest(BaseModel):
    """The seed's seven features, and/or a raw event (DESIGN.md §3 field names)."""

    model_config = ConfigDict(json_schema_extra=_CROSS_FIELD_RULES)

    # Strict numbers: `true` or `"10"` is refused naming the field, never read as 1 or 10.
    amount: float = Field(ge=0, allow_inf_nan=False, strict=True)
    hour_of_day: Hour | None = None
    days_since_last_txn: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)
    txn_count_24h: Count | None = None
    distinct_merchants_24h: Count | None = None
    avg_amount_7d: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)
    channel_online: Flag | None = None
    transaction_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    card_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    merchant_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    event_time: EventTime | None = None
    merchant_category: str | None = Field(default=None, min_length=1, max_length=64)
    channel: Literal["pos", "online", "atm"] | None = None
    device_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    lat: float | None = Field(default=None, ge=-90, le=90, strict=True)
    lon: float | None = Field(default=None, ge=-180, le=180, strict=True)
    currency: str | None = Field(default=None, max_length=8)

    @model_validator(mode="after")
    def _one_channel(self) -> "ScoreRequest":
        """`channel` and `channel_online` say the same thing: they must agree."""
        channel, online = self.channel, self.channel_online
        if channel is not None and online is not None and (channel == "online") != (online == 1):
            raise ValueError(
                f"channel {channel!r} and channel_online {online} disagree: send one, or "
                "both saying the same"
            )
        return self


class ScoreResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    fraud_probability: float
    # review: only from SENTINEL_FAILURE_POLICY=review, when the model could not answer
    decision: Literal["approve", "decline", "review"]
    threshold: float
    circuit_breaker_state: Literal["closed", "open"]  # the seed's meaning: who answered
    shadow_fraud_probability: float | None = None
    model_version: str | None  # None: no model loaded (the failure policy answered)
    scored_by: Literal["model", "heuristic"]
    # champion, or challenger for the cards of its canary share (SENTINEL_CANARY_SHARE)
    decided_by: Literal["champion", "challenger"]
    # Set when the model could not answer: the SENTINEL_FAILURE_POLICY that decided
    # (heuristic, review, decline, approve) and why (breaker_open, model_error, no_model).
    failure_policy: Literal["heuristic", "review", "decline", "approve"] | None = None
    failure_cause: Literal["breaker_open", "model_error", "no_model"] | None = None
    reasons: list[str]
    # What the event did to the online state: added; duplicate (a retried transaction_id,
    # answered with the answer stored for it: README "Retries");
    # too_late (older than the allowed lateness: scored, not stored); stateless (no card_id).
    state: Literal["added", "duplicate", "too_late", "stateless"]
    # Which model answered: "full" (every feature, online state) or a request profile's
    # (e.g. "precomputed-7": the seven features, no card). `profile_unavailable`: the profile
    # the request wanted, when the champion bundle has no model for it.
    profile: str
    profile_unavailable: str | None = None
    features: dict[str, float | None] | None = None  # with ?explain=true


class FeedbackRequest(BaseModel):
    transaction_id: str = Field(min_length=1, max_length=128, pattern=ID)
    is_fraud: bool = Field(strict=True)  # true or false, not 0 or 1
    label_time: EventTime
    card_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    merchant_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    event_time: EventTime | None = None


class FeedbackResponse(BaseModel):
    status: Literal["accepted"]
    # applied: the label reached the online state; the engine's other outcomes say why not
    outcome: str


class ScoreBatchRequest(BaseModel):
    events: list[ScoreRequest]


class ScoreBatchResponse(BaseModel):
    results: list[ScoreResponse]
