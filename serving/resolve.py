"""Resolving a validated score request into the model's feature vector.

Each feature is, in order of preference: the value given in the request (the seed's seven
fields), else what the online state says about the card, merchant and device (when the
request carries a raw event with `card_id`), else its cold-start value. Cold-start values
come from the engine itself — a first event on an empty state — so they can never drift
from the ones the model was trained on.

The request has passed `ScoreRequest` validation, which is at least as strict as the
engine's own `parse_event`, so its fields go to `FeatureEngine.process` as they are.
"""

import hashlib
import math
from array import array
from functools import cache

import orjson

from serving.feature_engine import (
    CardState,
    EventArgs,
    FeatureEngine,
    VectorPlan,
    feature_vector,
)
from serving.features import FEATURE_INDEX, SEED_FEATURES, FeatureSet
from serving.schemas import ScoreRequest

# The raw-event fields a stateful request must carry besides card_id.
STATEFUL_REQUIRED = ("transaction_id", "merchant_id")
_SEED_INDEX = [(name, FEATURE_INDEX[name]) for name in SEED_FEATURES]


class ResolveError(ValueError):
    """The request cannot be turned into features; the message names the fields."""

    def __init__(self, fields: list[str], reason: str) -> None:
        super().__init__(f"{', '.join(fields)}: {reason}")
        self.fields = fields
        self.reason = reason


def stateful_ids(request: ScoreRequest) -> tuple[str, str, str] | None:
    """(transaction, card, merchant) ids when the request updates online state, None when it
    has no card; ResolveError naming every missing id when it has a card without them."""
    txn, card, merchant = request.transaction_id, request.card_id, request.merchant_id
    if card is None:
        return None
    if txn is None or merchant is None:
        missing = [name for name in STATEFUL_REQUIRED if getattr(request, name) is None]
        raise ResolveError(missing, "required when card_id is given")
    return txn, card, merchant


def event_timestamp(request: ScoreRequest, received_at: float) -> float:
    """The event's time; a request without one happened when it arrived."""
    event_time = request.event_time
    return received_at if event_time is None else event_time.timestamp()


def fingerprint(request: ScoreRequest) -> str:
    """What makes a retry the same request: every field given, with the event time as an
    instant (so `Z` and `+00:00` agree) and numbers as validated (480, 480.0 and -0.0 vs 0
    agree). 16 hex digits of BLAKE2b over the fields as sorted JSON: the same on every host,
    and unchanged by a later version that adds an optional field."""
    fields = {
        name: value + 0.0 if type(value) is float else value  # -0.0 + 0.0 is 0.0
        for name, value in request.__dict__.items()
        if value is not None
    }
    if request.event_time is not None:
        fields["event_time"] = request.event_time.timestamp()
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def _args(r: ScoreRequest, t: float, txn: str, card: str, merchant: str) -> EventArgs:
    lat = math.nan if r.lat is None else r.lat
    lon = math.nan if r.lon is None else r.lon
    return (txn, t, card, merchant, r.amount, r.channel, r.device_id, lat, lon,
            r.merchant_category)  # fmt: skip


def event_args(request: ScoreRequest, t: float) -> EventArgs | None:
    """`FeatureEngine.process`'s arguments for a request with a card (None without one)."""
    ids = stateful_ids(request)
    return None if ids is None else _args(request, t, *ids)


@cache
def _cold_start_plan() -> VectorPlan:
    return VectorPlan(FeatureSet())  # the windows are empty whatever their lag


def cold_start_vector(request: ScoreRequest, t: float) -> list[float]:
    """No card: nothing to look up or update. The event scored as a first-ever payment, by
    the engine's own `feature_vector` on an empty card and merchant: what a new engine's
    `process` returns (tested), without building one per request (~600 µs)."""
    lat = math.nan if request.lat is None else math.radians(request.lat)
    lon = math.nan if request.lon is None else math.radians(request.lon)
    return feature_vector(
        _cold_start_plan().vector, CardState(), 0, t, request.amount, request.channel,
        request.device_id, lat, lon, request.merchant_category, array("d"), 0, None, 0,
    )  # fmt: skip


def with_given_features(vector: list[float], request: ScoreRequest) -> list[float]:
    """The seed's features given in the request take precedence over computed ones."""
    for name, index in _SEED_INDEX:
        value = getattr(request, name)
        if value is not None:
            vector[index] = float(value)
    return vector


def resolve_features(engine: FeatureEngine, request: ScoreRequest, t: float) -> list[float]:
    """The vector in FEATURE_NAMES order for one event at epoch seconds `t` (see
    `event_timestamp`); a request with a card updates the online state. (`Scorer` composes
    the same steps for a whole call, with one `process_many`.)"""
    args = event_args(request, t)
    vector = cold_start_vector(request, t) if args is None else engine.process(*args)
    return with_given_features(vector, request)
