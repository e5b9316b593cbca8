"""SENTINEL_FAILURE_POLICY (what answers when the model cannot) and the canary (a share of
cards the challenger decides, stopped automatically), through the app and the scored log."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.canary import Canary, CanaryConfig, FileStops, RedisStops, in_canary
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import SEED_REQUEST, publish_nan_model, publish_small

POLICIES = ("heuristic", "review", "decline", "approve")


def event(i: int, card: str | None = None) -> dict[str, object]:
    return {
        "transaction_id": f"t{i}", "card_id": card or f"card{i}", "merchant_id": "m1",
        "amount": 20.0 + i, "event_time": f"2026-01-01T12:{i // 60:02d}:{i % 60:02d}Z",
        "channel": "online", "device_id": "d1",
    }  # fmt: skip


def scored_lines(home: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((home / "scored").glob("scored-*.jsonl"))
            for line in f.read_text().splitlines()]  # fmt: skip


def service_of(c: TestClient):  # type: ignore[no-untyped-def]
    return c.app.state.service  # type: ignore[attr-defined]


def client(home: Path, **settings: object) -> TestClient:
    return TestClient(create_app(ServiceSettings(home=home, **settings)))  # type: ignore[arg-type]


# --- the failure policy --------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_answers_for_an_open_breaker_and_says_so(tmp_path: Path, policy: str) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    with client(tmp_path, force_circuit_open=True, failure_policy=policy) as c:
        body = c.post("/v1/score", json=event(1)).json()
        metrics = c.get("/metrics").text
    assert (body["failure_policy"], body["failure_cause"]) == (policy, "breaker_open")
    assert body["scored_by"] == "heuristic" and body["circuit_breaker_state"] == "open"
    heuristic_decision = "decline" if body["fraud_probability"] >= body["threshold"] else "approve"
    expected = heuristic_decision if policy == "heuristic" else policy
    assert body["decision"] == expected
    assert body["reasons"] is not None  # the heuristic's reasons, for a reviewer
    assert f'sentinel_failure_policy_total{{cause="breaker_open",policy="{policy}"}} 1.0' in metrics
    assert f'sentinel_decisions_total{{decision="{expected}"}} 1.0' in metrics
    (line,) = scored_lines(tmp_path)
    assert (line["failure_policy"], line["failure_cause"], line["decision"]) == (
        policy, "breaker_open", expected,
    )  # fmt: skip


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_answers_without_a_model(tmp_path: Path, policy: str) -> None:
    with client(tmp_path, failure_policy=policy) as c:
        body = c.post("/v1/score", json=SEED_REQUEST).json()
    assert (body["failure_policy"], body["failure_cause"]) == (policy, "no_model")
    assert body["model_version"] is None and body["threshold"] == 0.5
    if policy != "heuristic":
        assert body["decision"] == policy
    else:
        assert body["decision"] == ("decline" if body["fraud_probability"] >= 0.5 else "approve")


def test_a_failing_model_is_answered_by_the_policy_and_a_healthy_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    with client(tmp_path, failure_policy="review") as c:
        healthy = c.post("/v1/score", json=event(1)).json()
        assert "failure_policy" not in healthy and healthy["scored_by"] == "model"
        model = service_of(c).manager.current.champion.full

        def broken(rows: object) -> list[float]:
            raise RuntimeError("onnxruntime failed")

        monkeypatch.setattr(model.predictor, "predict_rows", broken)
        failed = c.post("/v1/score", json=event(2)).json()
    assert (failed["decision"], failed["failure_cause"]) == ("review", "model_error")


def test_a_bad_policy_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="failure_policy"):
        ServiceSettings(failure_policy="maybe")  # type: ignore[arg-type]


# --- the canary ----------------------------------------------------------------------------


def test_the_canary_picks_cards_by_hash_stably_and_a_wider_share_keeps_them() -> None:
    cards = [f"card{i}" for i in range(4_000)]
    tenth = {c for c in cards if in_canary("v2", c, 0.1)}
    assert 330 < len(tenth) < 470  # about 10%
    assert tenth <= {c for c in cards if in_canary("v2", c, 0.3)}
    assert tenth == {c for c in cards if in_canary("v2", c, 0.1)}  # the same every time
    assert tenth != {c for c in cards if in_canary("v3", c, 0.1)}  # another challenger: others
    assert not any(in_canary("v2", c, 0.0) for c in cards)


@pytest.fixture
def two_models(tmp_path: Path) -> Iterator[Path]:
    registry = Registry(tmp_path / "registry")
    publish_small(registry, seed=1)
    publish_small(registry, seed=3, minute=2)  # the challenger
    yield tmp_path


def test_a_canary_card_is_decided_by_the_challenger_every_time(two_models: Path) -> None:
    with client(two_models, canary_share=0.5) as c:
        models = service_of(c).manager.current
        champion, challenger = models.champion.version, models.challenger.version
        bodies = [c.post("/v1/score", json=event(i, f"card{i % 20}")).json() for i in range(60)]
        metrics = c.get("/metrics").text
        status = c.get("/v1/models").json()["canary"]
    for i, body in enumerate(bodies):
        canary = in_canary(challenger, f"card{i % 20}", 0.5)
        assert body["decided_by"] == ("challenger" if canary else "champion")
        assert body["model_version"] == (challenger if canary else champion)
    decided = [b["decided_by"] for b in bodies]
    assert 0 < decided.count("challenger") < 60
    lines = scored_lines(two_models)
    assert [line["decided_by"] for line in lines] == decided
    for line in lines:  # both scores and the champion's identity, whoever decided
        assert line["champion_version"] == champion and line["challenger_version"] == challenger
        assert line["champion_score"] is not None and line["challenger_score"] is not None
    n = decided.count("challenger")
    assert f'sentinel_decided_by_total{{model="challenger"}} {float(n)}' in metrics
    assert "sentinel_canary_share 0.5" in metrics
    assert status["share"] == 0.5 and status["stopped"] is None


def test_without_a_share_the_challenger_only_shadows(two_models: Path) -> None:
    with client(two_models) as c:
        bodies = [c.post("/v1/score", json=event(i)).json() for i in range(20)]
    assert {b["decided_by"] for b in bodies} == {"champion"}
    assert all("shadow_fraud_probability" in b for b in bodies)


def test_the_challenger_breaker_opening_stops_the_canary_on_every_worker(
    two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"canary_share": 1.0, "breaker_minimum_calls": 2, "breaker_window": 4}
    with client(two_models, **settings) as c, client(two_models, **settings) as other:
        challenger = service_of(c).manager.current.challenger.full
        other.post("/v1/score", json=event(100))  # the other worker follows the challenger
        assert other.get("/v1/models").json()["canary"]["share"] == 1.0

        def broken(rows: object) -> list[float]:
            raise RuntimeError("challenger down")

        monkeypatch.setattr(challenger.predictor, "predict_rows", broken)
        bodies = [c.post("/v1/score", json=event(i)).json() for i in range(4)]
        # the challenger failed: the champion decided every one, and the canary stopped
        assert {b["decided_by"] for b in bodies} == {"champion"}
        assert all(b["scored_by"] == "model" for b in bodies)
        status = c.get("/v1/models").json()
        assert status["challenger_breaker"]["state"] == "open"
        assert status["canary"]["stopped"]["reason"] == "breaker_open"
        assert status["canary"]["share"] == 0.0
        metrics = c.get("/metrics").text
        assert 'sentinel_canary_stops_total{reason="breaker_open"} 1.0' in metrics
        assert "sentinel_canary_stopped 1.0" in metrics
        assert 'sentinel_challenger_breaker_state{state="open"} 1.0' in metrics
        # the other worker learns it on its background tick, without a request
        assert other.get("/v1/models").json()["canary"]["stopped"] is None
        service_of(other).follow_controls()
        assert other.get("/v1/models").json()["canary"]["stopped"]["reason"] == "breaker_open"


def test_a_drifting_decline_rate_stops_the_canary_and_an_admin_resumes_it(
    two_models: Path,
) -> None:
    token = "an-admin-token-0123456789"
    settings = {"canary_share": 0.5, "canary_min_events": 10, "canary_window": 10,
                "admin_token": token}  # fmt: skip
    with client(two_models, **settings) as c:
        service = service_of(c)
        challenger = service.manager.current.challenger.full
        object.__setattr__(challenger, "threshold", 0.0)  # it now declines everything
        bodies = [c.post("/v1/score", json=event(i)).json() for i in range(12)]
        stopped = c.get("/v1/models").json()["canary"]["stopped"]
        assert stopped["reason"] == "decline_rate" and stopped["challenger_decline_rate"] == 1.0
        after = [c.post("/v1/score", json=event(100 + i)).json() for i in range(10)]
        assert {b["decided_by"] for b in after} == {"champion"}  # back to 0%
        assert {b["decided_by"] for b in bodies[:10]} == {"champion", "challenger"}
        object.__setattr__(challenger, "threshold", 0.5)
        resumed = c.post("/admin/canary/resume", headers={"Authorization": f"Bearer {token}"})
        assert resumed.json()["resumed"] is True and resumed.json()["canary"]["share"] == 0.5
        assert not list((two_models / "serving").glob("canary-stopped-*"))


def test_a_stop_belongs_to_its_challenger_and_survives_a_restart(tmp_path: Path) -> None:
    stops = FileStops(tmp_path)
    first = Canary(CanaryConfig(share=0.2), stops)
    assert first.share("v2") == 0.2
    first.stop("breaker_open")
    assert first.share("v2") == 0.0
    restarted = Canary(CanaryConfig(share=0.2), FileStops(tmp_path))
    assert restarted.share("v2") == 0.0  # still stopped after a restart
    assert restarted.share("v3") == 0.2  # a new challenger starts at the configured share
    (tmp_path / "canary-stopped-v4.json").write_text("{not json")
    assert restarted.share("v4") == 0.0  # an unreadable stop is a stop


def test_on_redis_a_stop_reaches_every_host_and_a_resume_too() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379)
    prefix = f"test-{uuid.uuid4().hex}:"
    config = CanaryConfig(share=0.3)
    here = Canary(config, RedisStops(client, prefix))
    there = Canary(config, RedisStops(client, prefix))
    try:
        assert here.share("v7") == there.share("v7") == 0.3
        here.stop("decline_rate", events=1_000)
        there.poll()  # the other host's background tick
        assert there.share("v7") == 0.0 and there.stopped["reason"] == "decline_rate"
        there.stop("breaker_open")  # already stopped: the first stop stands
        assert json.loads(client.get(f"{prefix}canary:stopped:v7"))["reason"] == "decline_rate"
        assert there.resume() is True
        here.poll()
        assert here.share("v7") == 0.3
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def test_a_resume_is_not_undone_by_the_other_workers_old_window(tmp_path: Path) -> None:
    config = CanaryConfig(share=0.5, min_events=4, window=4, max_decline_rate_change=0.3)
    here, there = Canary(config, FileStops(tmp_path)), Canary(config, FileStops(tmp_path))
    assert here.share("v2") == there.share("v2") == 0.5
    for canary in (here, there):  # both workers saw the challenger decline, the champion not
        for _ in range(4):
            canary.observe(False, True)
    assert here.stopped and there.stopped
    assert here.resume() is True
    there.poll()  # the resume reaches the other worker...
    there.observe(False, False)  # ...which judges afresh: one agreeing event does not stop
    assert there.stopped is None and there.share("v2") == 0.5
    here.poll()
    assert here.share("v2") == 0.5


def test_a_stored_policy_answer_is_replayed_to_a_retry_as_it_was(tmp_path: Path) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    with client(tmp_path, force_circuit_open=True, failure_policy="decline") as c:
        first = c.post("/v1/score", json=event(1)).json()
        retry = c.post("/v1/score", json=event(1)).json()
    assert first["decision"] == "decline" and first["failure_cause"] == "breaker_open"
    assert retry == first | {"state": "duplicate"}


def test_a_model_answering_nan_is_answered_by_the_policy_and_ejected(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    publish_nan_model(
        registry, minute=0, with_proof=False
    )  # the only champion: nothing to fall back to
    with client(tmp_path, failure_policy="approve") as c:
        body = c.post("/v1/score", json=event(1)).json()
    assert (body["decision"], body["failure_cause"]) == ("approve", "model_error")


def test_a_model_past_its_deadline_is_answered_by_the_policy(tmp_path: Path) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    settings = {"inject_latency_ms": 200, "circuit_threshold_ms": 20, "failure_policy": "review"}
    with client(tmp_path, **settings) as c:
        body = c.post("/v1/score", json=event(1)).json()
    assert (body["decision"], body["failure_cause"]) == ("review", "model_error")


def test_a_new_challenger_starts_with_a_closed_breaker_and_its_own_canary(
    two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"canary_share": 1.0, "breaker_minimum_calls": 2, "breaker_window": 4}
    with client(two_models, **settings) as c:
        service = service_of(c)
        old = service.manager.current.challenger

        def broken(rows: object) -> list[float]:
            raise RuntimeError("challenger down")

        monkeypatch.setattr(old.full.predictor, "predict_rows", broken)
        for i in range(4):
            c.post("/v1/score", json=event(i))
        assert service.challenger_breaker.state == "open"
        new, role = publish_small(Registry(two_models / "registry"), seed=5, minute=4)
        assert role == "challenger"
        service.reload()
        body = c.post("/v1/score", json=event(10)).json()
        assert body["decided_by"] == "challenger" and body["model_version"] == new
        status = c.get("/v1/models").json()
        assert status["challenger_breaker"]["state"] == "closed"
        assert status["canary"]["challenger"] == new and status["canary"]["stopped"] is None
