"""Resolving requests to feature vectors: request values, then online state, then cold start."""

import math

import pytest

from serving.feature_engine import FeatureEngine
from serving.features import FEATURE_INDEX
from serving.resolve import ResolveError, resolve_features
from tests.serving.bundles import SEED_REQUEST

T = 1_767_268_800.0  # 2026-01-01 12:00 UTC


def value(vector: list[float], name: str) -> float:
    return vector[FEATURE_INDEX[name]]


def test_seed_request_uses_its_values_and_cold_start_for_the_rest() -> None:
    engine = FeatureEngine()
    vector, stateful = resolve_features(engine, SEED_REQUEST, received_at=T)
    assert stateful is False
    for name, given in SEED_REQUEST.items():
        assert value(vector, name) == given, name
    assert value(vector, "txn_count_1h") == 0
    assert math.isnan(value(vector, "avg_amount_30d"))
    assert engine.stats()["events"] == 0  # nothing stored for a request without a card


def test_raw_events_with_a_card_use_and_update_the_online_state() -> None:
    engine = FeatureEngine()
    first = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 10.0,
             "event_time": T}  # fmt: skip
    second = first | {"transaction_id": "t2", "event_time": T + 60, "amount": 30.0}
    resolve_features(engine, first)
    vector, stateful = resolve_features(engine, second)
    assert stateful is True
    assert value(vector, "txn_count_10m") == 1
    assert value(vector, "avg_amount_30d") == 10.0
    again, _ = resolve_features(engine, second)  # a retry
    assert again == vector
    assert engine.stats()["duplicates"] == 1


def test_request_values_override_the_online_state() -> None:
    engine = FeatureEngine()
    event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 10.0,
             "event_time": T, "txn_count_24h": 7}  # fmt: skip
    vector, _ = resolve_features(engine, event)
    assert value(vector, "txn_count_24h") == 7


def test_event_time_defaults_to_when_the_request_arrived() -> None:
    event = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 1.0}
    vector, _ = resolve_features(FeatureEngine(), event, received_at=T + 3 * 3600)
    assert value(vector, "hour_of_day") == 15


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"card_id": "c1", "merchant_id": "m1", "amount": 1.0}, "transaction_id"),
        ({"card_id": "c1", "transaction_id": "t", "amount": 1.0}, "merchant_id"),
        ({"card_id": "c1", "transaction_id": "t", "merchant_id": "m", "amount": -1}, "amount"),
        ({"amount": 5.0, "event_time": "not a time"}, "event_time"),
    ],
)
def test_unusable_requests_name_the_field(request_fields: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        resolve_features(FeatureEngine(), request_fields, received_at=T)
    assert str(caught.value).startswith(f"{field}:")


def test_missing_raw_fields_are_all_named_at_once() -> None:
    with pytest.raises(ResolveError, match=r"^transaction_id, merchant_id: required"):
        resolve_features(FeatureEngine(), {"card_id": "c1", "amount": 1.0}, received_at=T)
