"""The online state through HTTP: bad timestamps are refused before they touch it, every
answer says what happened to it, and its size is bounded and reported."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.feature_engine import FeatureEngine
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import SEED_REQUEST, publish_small
from tests.serving.test_app import RAW, client_for

# The service's wall clock in these tests: half an hour after RAW's event_time.
NOW = dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.UTC)
FAR_FUTURE = "9999-12-31T23:59:59Z"


def at(minute: int, second: int = 0) -> str:
    return dt.datetime(2026, 1, 1, 12, minute, second, tzinfo=dt.UTC).isoformat()


def ahead(seconds: float) -> str:
    return (NOW + dt.timedelta(seconds=seconds)).isoformat()


def with_clock(client: TestClient) -> TestClient:
    client.app.state.service.scorer.clock = NOW.timestamp  # type: ignore[attr-defined]
    return client


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    publish_small(registry, seed=1)
    return registry


@pytest.fixture
def client(tmp_path: Path, registry: Registry) -> Iterator[TestClient]:
    with client_for(tmp_path) as c:
        yield with_clock(c)


def score(client: TestClient, **fields) -> dict:
    response = client.post("/v1/score?explain=true", json=RAW | fields)
    assert response.status_code == 200, response.text
    return response.json()


def count_10m(client: TestClient, **fields) -> int:
    return int(score(client, **fields)["features"]["txn_count_10m"])


def metrics(client: TestClient) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("sentinel_")
    }


def engine_counters(client: TestClient) -> dict:
    return client.get("/v1/models").json()["features"]


@pytest.mark.parametrize("future", [FAR_FUTURE, ahead(600)])
def test_an_event_ahead_of_the_clock_is_422_and_the_state_carries_on(
    client: TestClient, future: str
) -> None:
    assert count_10m(client, transaction_id="t1", event_time=at(0)) == 0
    refused = client.post("/v1/score", json=RAW | {"transaction_id": "bad", "event_time": future})
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "event_time"]
    assert "more than 300 s ahead of the service clock" in error["msg"]
    assert count_10m(client, transaction_id="t2", event_time=at(1)) == 1
    assert count_10m(client, transaction_id="t3", event_time=at(2)) == 2
    counters = engine_counters(client)
    assert (counters["events"], counters["too_late"]) == (3, 0)
    # Within the skew is fine (the limit itself included); it is stored like any event.
    assert score(client, transaction_id="t4", event_time=ahead(300))["state"] == "added"


def test_a_batch_with_one_event_ahead_of_the_clock_is_refused_whole(client: TestClient) -> None:
    first = RAW | {"transaction_id": "t1", "event_time": at(0)}
    bad = RAW | {"transaction_id": "bad", "event_time": FAR_FUTURE}
    second = RAW | {"transaction_id": "t2", "event_time": at(1)}
    refused = client.post("/v1/score/batch", json={"events": [first, bad, second]})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "events.1.event_time"]
    assert engine_counters(client)["events"] == 0  # nothing reached the engine
    assert client.get("/v1/models").json()["state"]["cards"] == 0
    body = client.post("/v1/score/batch?explain=true", json={"events": [first, second]}).json()
    assert [r["features"]["txn_count_10m"] for r in body["results"]] == [0, 1]
    assert [r["state"] for r in body["results"]] == ["added", "added"]


def test_every_answer_says_what_happened_to_the_state(client: TestClient) -> None:
    assert score(client, transaction_id="t1", event_time=at(0))["state"] == "added"
    assert score(client, transaction_id="t2", event_time=at(10))["state"] == "added"
    retry = score(client, transaction_id="t2", event_time=at(10))
    assert retry["state"] == "duplicate"
    # 1970 is not refused: far too late for the state, it is scored and not stored.
    old = score(client, transaction_id="t-1970", event_time="1970-01-01T00:00:00Z")
    assert old["state"] == "too_late"
    assert 0.0 <= old["fraud_probability"] <= 1.0
    seed = client.post("/v1/score", json=SEED_REQUEST).json()
    assert seed["state"] == "stateless"
    batch = client.post("/v1/score/batch", json={"events": [SEED_REQUEST, SEED_REQUEST]})
    assert [r["state"] for r in batch.json()["results"]] == ["stateless", "stateless"]
    assert count_10m(client, transaction_id="t3", event_time=at(11)) == 1  # t2 only, once

    counters = engine_counters(client)
    assert (counters["too_late"], counters["duplicates"]) == (1, 1)
    samples = metrics(client)
    assert samples['sentinel_state_updates_total{state="added"}'] == 3
    assert samples['sentinel_state_updates_total{state="duplicate"}'] == 1
    assert samples['sentinel_state_updates_total{state="too_late"}'] == 1
    assert samples['sentinel_state_updates_total{state="stateless"}'] == 3


def test_labels_ahead_of_the_clock_or_before_their_event_are_422(client: TestClient) -> None:
    score(client, transaction_id="t1", event_time=at(0))
    label = {"transaction_id": "t1", "is_fraud": True}
    refusals = [
        label | {"label_time": FAR_FUTURE},
        label | {"label_time": ahead(301)},
        # Before the event: its time given in the request, or remembered for the id.
        label | {"label_time": at(0, 30), "event_time": at(1)},
        label | {"label_time": at(0, 30), "event_time": at(1), "card_id": "c1", "merchant_id": "m"},
        label | {"label_time": "2026-01-01T11:59:59Z"},
        label | {"label_time": "2026-01-01T11:59:59Z", "is_fraud": False},
    ]
    before = client.get("/v1/models").json()
    for body in refusals:
        response = client.post("/v1/feedback", json=body)
        assert response.status_code == 422, body
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "label_time"]
        assert error["msg"].startswith("label_time: ")
    after = client.get("/v1/models").json()
    assert (after["features"], after["state"]) == (before["features"], before["state"])
    assert not any(k.startswith("sentinel_feedback_total") for k in metrics(client))
    ok = client.post("/v1/feedback", json=label | {"label_time": ahead(300)})
    assert ok.json()["outcome"] == "applied"
    assert engine_counters(client)["labels_applied"] == 1


def test_the_card_cap_evicts_the_least_recently_used_card(
    tmp_path: Path, registry: Registry
) -> None:
    with client_for(tmp_path, max_cards=3) as c:
        with_clock(c)
        for minute, card in enumerate(["c1", "c2", "c3"]):
            score(c, transaction_id=f"{card}-a", card_id=card, event_time=at(minute))
        score(c, transaction_id="c1-b", card_id="c1", event_time=at(3))  # c1 used again
        score(c, transaction_id="c4-a", card_id="c4", event_time=at(4))  # c2 goes
        state = c.get("/v1/models").json()["state"]
        assert (state["cards"], state["merchants"], state["txns"]) == (3, 1, 5)
        assert state["limits"] == {"card": 3, "merchant": 200_000}
        assert state["evicted"]["card"] == {"cap": 1, "idle": 0}
        samples = metrics(c)
        assert samples['sentinel_state_entries{table="card"}'] == 3
        assert samples['sentinel_state_entries{table="txn"}'] == 5
        assert samples['sentinel_state_evicted_total{reason="cap",table="card"}'] == 1
        assert samples['sentinel_state_evicted_total{reason="cap",table="merchant"}'] == 0
        # The evicted card starts cold; the one used again kept its history.
        back = score(c, transaction_id="c2-b", card_id="c2", event_time=at(5))["features"]
        assert back["txn_count_1h"] == 0 and back["days_since_last_txn"] is None
        kept = score(c, transaction_id="c1-c", card_id="c1", event_time=at(6))["features"]
        assert kept["txn_count_1h"] == 2


def test_a_restored_snapshot_with_a_poisoned_clock_is_clamped(
    tmp_path: Path, registry: Registry
) -> None:
    engine = FeatureEngine()  # as an older version left it: it absorbed a year-9999 event
    engine.process_event(RAW | {"transaction_id": "bad", "event_time": FAR_FUTURE})
    engine.snapshot(tmp_path / "serving" / "feature_state.pkl")
    with client_for(tmp_path) as c:
        # Without event_time an event happens at the wall clock, which the poison was ahead of.
        event = {k: v for k, v in RAW.items() if k != "event_time"}
        first = c.post("/v1/score?explain=true", json=event | {"transaction_id": "n1"}).json()
        second = c.post("/v1/score?explain=true", json=event | {"transaction_id": "n2"}).json()
    assert (first["state"], second["state"]) == ("added", "added")
    assert second["features"]["txn_count_10m"] == 1


def test_the_skew_setting_is_read_from_the_environment_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTINEL_MAX_CLOCK_SKEW_S", "60")
    monkeypatch.setenv("SENTINEL_MAX_CARDS", "5000")
    settings = ServiceSettings()
    assert (settings.max_clock_skew_s, settings.max_cards) == (60.0, 5000)
    assert ServiceSettings(_env_file=None).max_merchants == 200_000
    for field in ("max_clock_skew_s", "max_cards", "max_merchants"):
        with pytest.raises(ValidationError):
            ServiceSettings(**{field: 0})
