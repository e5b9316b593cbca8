"""Request and response bodies. The seed's fields, ranges and names are unchanged."""

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc_if_naive(value: dt.datetime) -> dt.datetime:
    """DESIGN.md: a timestamp without a zone is UTC (never the server's local time)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


EventTime = Annotated[dt.datetime, AfterValidator(_utc_if_naive)]
# Ids are opaque, but never hold NUL: the shared state store uses it as a field separator.
ID = r"^[^\x00]+$"


class ScoreRequest(BaseModel):
    """The seed's seven features, and/or a raw event (DESIGN.md §3 field names)."""

    amount: float = Field(ge=0, allow_inf_nan=False)
    hour_of_day: int | None = Field(default=None, ge=0, le=23)
    days_since_last_txn: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    txn_count_24h: int | None = Field(default=None, ge=0)
    distinct_merchants_24h: int | None = Field(default=None, ge=0)
    avg_amount_7d: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    channel_online: int | None = Field(default=None, ge=0, le=1)
    transaction_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    card_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    merchant_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    event_time: EventTime | None = None
    merchant_category: str | None = Field(default=None, min_length=1, max_length=64)
    channel: Literal["pos", "online", "atm"] | None = None
    device_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    currency: str | None = Field(default=None, max_length=8)


class ScoreResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    fraud_probability: float
    decision: Literal["approve", "decline"]
    threshold: float
    circuit_breaker_state: Literal["closed", "open"]  # the seed's meaning: who answered
    shadow_fraud_probability: float | None = None
    model_version: str
    scored_by: Literal["model", "heuristic"]
    reasons: list[str]
    # What the event did to the online state: added; duplicate (a retried transaction_id);
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
    is_fraud: bool
    label_time: EventTime
    card_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    merchant_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=ID)
    event_time: EventTime | None = None


class ScoreBatchRequest(BaseModel):
    events: list[ScoreRequest]


class ScoreBatchResponse(BaseModel):
    results: list[ScoreResponse]
