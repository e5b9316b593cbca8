"""Resolving requests to feature vectors: request values, then online state, then cold start."""

import math

import pytest
from pydantic import ValidationError

from serving.feature_engine import FeatureEngine
from serving.features import FEATURE_INDEX
from serving.resolve import ResolveError, cold_start_vector, event_timestamp, resolve_features
from serving.schemas import ScoreRequest
from serving.timeparse import iso
from tests.serving.bundles import SEED_REQUEST

T = 1_767_268_800.0  # 2026-01-01 12:00 UTC


def value(vector: list[float], name: str) -> float:
    return vector[FEATURE_INDEX[name]]


def resolve(engine: FeatureEngine, fields: dict, received_at: float = T) -> list[float]:
    request = ScoreRequest.model_validate(fields)
    return resolve_features(engine, request, event_timestamp(request, received_at))


def test_seed_request_uses_its_values_and_cold_start_for_the_rest() -> None:
    engine = FeatureEngine()
    vector = resolve(engine, SEED_REQUEST)
    for name, given in SEED_REQUEST.items():
        assert value(vector, name) == given, name
    assert value(vector, "txn_count_1h") == 0
    assert math.isnan(value(vector, "avg_amount_30d"))
    assert engine.stats()["events"] == 0  # nothing stored for a request without a card


def test_raw_events_with_a_card_use_and_update_the_online_state() -> None:
    engine = FeatureEngine()
    first = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 10.0,
             "event_time": iso(T)}  # fmt: skip
    second = first | {"transaction_id": "t2", "event_time": iso(T + 60), "amount": 30.0}
    resolve(engine, first)
    vector = resolve(engine, second)
    assert value(vector, "txn_count_10m") == 1
    assert value(vector, "avg_amount_30d") == 10.0
    again = resolve(engine, second)  # a retry
    assert again == vector
    assert engine.stats()["duplicates"] == 1


def test_request_values_override_the_online_state() -> None:
    engine = FeatureEngine()
    event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 10.0,
             "event_time": iso(T), "txn_count_24h": 7}  # fmt: skip
    vector = resolve(engine, event)
    assert value(vector, "txn_count_24h") == 7


def test_event_time_defaults_to_when_the_request_arrived() -> None:
    event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 1.0}
    vector = resolve(FeatureEngine(), event, received_at=T + 3 * 3600)
    assert value(vector, "hour_of_day") == 15


def test_a_zone_less_event_time_is_utc() -> None:
    event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 1.0,
             "event_time": "2026-01-01T15:00:00"}  # fmt: skip
    assert value(resolve(FeatureEngine(), event), "hour_of_day") == 15


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"card_id": "c1", "transaction_id": "t", "merchant_id": "m", "amount": -1}, "amount"),
        ({"amount": 5.0, "event_time": "not a time"}, "event_time"),
        ({"amount": 5.0, "merchant_category": ""}, "merchant_category"),
        ({"amount": 5.0, "lat": 91}, "lat"),
    ],
)
def test_invalid_fields_are_refused_by_the_schema_naming_them(request_fields, field) -> None:
    with pytest.raises(ValidationError) as caught:
        ScoreRequest.model_validate(request_fields)
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"card_id": "c1", "merchant_id": "m1", "amount": 1.0}, "^transaction_id: required"),
        ({"card_id": "c1", "transaction_id": "t", "amount": 1.0}, "^merchant_id: required"),
        ({"card_id": "c1", "amount": 1.0}, "^transaction_id, merchant_id: required"),
    ],
)
def test_a_card_without_its_event_ids_names_every_missing_one(request_fields, message) -> None:
    engine = FeatureEngine()
    with pytest.raises(ResolveError, match=message):
        resolve(engine, request_fields)
    assert engine.stats()["events"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": 0.0},
        {"amount": 420.5, "channel": "online", "merchant_category": "jewelry", "lat": 41.9,
         "lon": -87.6, "device_id": "d1"},
        {"amount": 12.0, "channel": "atm", "merchant_category": "not-a-category"},
        {"amount": 99.0, "channel": "pos", "lat": -33.9},
    ],
)  # fmt: skip
@pytest.mark.parametrize("t", [0.0, T, T + 86_399.5, 4_102_444_800.0])
def test_the_cold_start_vector_is_a_new_engines_first_event_bit_for_bit(
    fields: dict, t: float
) -> None:
    request = ScoreRequest.model_validate(fields)
    fast = cold_start_vector(request, t)
    engine = FeatureEngine().process(
        "txn", t, "card", "merchant", request.amount, request.channel, request.device_id,
        math.nan if request.lat is None else request.lat,
        math.nan if request.lon is None else request.lon, request.merchant_category,
    )  # fmt: skip
    assert [repr(v) for v in fast] == [repr(v) for v in engine]  # NaN in the same places
