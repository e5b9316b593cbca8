"""The heuristic fallback speaks for the earlier system's seven precomputed features too."""

from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.heuristic import heuristic_score
from serving.registry import Registry
from serving.resolve import cold_start_vector, with_given_features
from serving.schemas import ScoreRequest
from serving.settings import ServiceSettings
from tests.serving.bundles import publish_small

# The earlier system's documented examples (its README): a risky payment and a benign one.
RISKY = {"amount": 420.5, "hour_of_day": 3, "days_since_last_txn": 0.1, "txn_count_24h": 12,
         "distinct_merchants_24h": 9, "avg_amount_7d": 55.0, "channel_online": 1}  # fmt: skip
BENIGN = {"amount": 120.0, "hour_of_day": 14, "days_since_last_txn": 1.5, "txn_count_24h": 3,
          "distinct_merchants_24h": 2, "avg_amount_7d": 95.0, "channel_online": 0}  # fmt: skip
T = 1_767_268_800.0


def _heuristic(body: dict):
    request = ScoreRequest.model_validate(body)
    return heuristic_score(with_given_features(cold_start_vector(request, T), request))


def test_the_seven_features_alone_make_the_risky_example_risky() -> None:
    result = _heuristic(RISKY)
    assert result.reasons == (  # strongest first (ties: as the rules sort)
        "night_online", "card_velocity_24h", "amount_far_above_7d_average",
        "merchant_spread_24h",
    )  # fmt: skip
    assert result.probability > 0.5


def test_the_benign_example_fires_nothing() -> None:
    result = _heuristic(BENIGN)
    assert result.reasons == ()
    assert result.probability < 0.01


def test_each_rule_of_the_seven_fires_alone_at_its_bound() -> None:
    for change, reason in (
        ({"txn_count_24h": 10}, "card_velocity_24h"),
        ({"distinct_merchants_24h": 6}, "merchant_spread_24h"),
        ({"amount": 380.0}, "amount_far_above_7d_average"),  # 4 x 95
        ({"hour_of_day": 4}, "night_time"),
        ({"hour_of_day": 0, "channel_online": 1}, "night_online"),
    ):
        assert _heuristic(BENIGN | change).reasons == (reason,), change
    below = {"txn_count_24h": 9, "distinct_merchants_24h": 5, "amount": 379.0, "hour_of_day": 5}
    assert _heuristic(BENIGN | below).reasons == ()


def test_with_the_breaker_open_the_risky_example_is_declined(tmp_path: Path) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    settings = ServiceSettings(home=tmp_path, force_circuit_open=True)
    with TestClient(create_app(settings)) as client:
        risky = client.post("/v1/score", json=RISKY).json()
        benign = client.post("/v1/score", json=BENIGN).json()
    assert risky["scored_by"] == benign["scored_by"] == "heuristic"
    assert risky["decision"] == "decline" and "night_online" in risky["reasons"]
    assert benign["decision"] == "approve" and benign["reasons"] == []
