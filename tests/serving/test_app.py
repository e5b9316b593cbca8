"""The scoring service through TestClient(create_app(...)), so the lifespan runs."""

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app as cli_app
from serving.app import create_app
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import SEED_REQUEST, publish_small

RAW = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 20.0,
       "event_time": "2026-01-01T12:00:00Z", "channel": "online", "device_id": "d1"}  # fmt: skip


ADMIN_TOKEN = "s3cret-admin-token-0123"


def client_for(home: Path, **settings) -> TestClient:
    return TestClient(create_app(ServiceSettings(home=home, admin_token=ADMIN_TOKEN, **settings)))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def client(tmp_path: Path, registry: Registry) -> Iterator[TestClient]:
    publish_small(registry, seed=1)
    with client_for(tmp_path) as c:
        yield c


def test_without_a_model_health_is_ok_ready_is_503_and_the_failure_policy_answers(
    tmp_path: Path,
) -> None:
    with client_for(tmp_path) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 503  # load balancers keep traffic away until a model loads
        assert ready.json()["reason"] == "no champion model loaded"
        score = c.post("/v1/score", json=SEED_REQUEST)
        assert score.status_code == 200  # a caller that comes anyway gets the policy's answer
        body = score.json()
        assert body["failure_policy"] == "heuristic" and body["failure_cause"] == "no_model"
        assert body["model_version"] is None and body["scored_by"] == "heuristic"


def test_the_seed_request_gets_the_seed_response(client: TestClient) -> None:
    response = client.post("/v1/score", json=SEED_REQUEST)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "fraud_probability", "decision", "threshold", "circuit_breaker_state",
        "model_version", "scored_by", "reasons", "state", "profile", "profile_unavailable",
        "decided_by",
    }  # fmt: skip
    assert body["state"] == "stateless"  # no card: no online state read or written
    # The seven features without a card want the precomputed-7 model; this bundle has none,
    # so its full model answers, and says so.
    assert (body["profile"], body["profile_unavailable"]) == ("full", "precomputed-7")
    assert "shadow_fraud_probability" not in body  # no challenger loaded
    assert 0.0 <= body["fraud_probability"] <= 1.0
    assert body["decision"] in {"approve", "decline"}
    assert body["circuit_breaker_state"] == "closed"
    assert body["scored_by"] == "model"
    assert client.get("/ready").json()["champion"] == body["model_version"]


@pytest.mark.parametrize(("field", "value"), [("hour_of_day", 24), ("channel_online", 2),
                                              ("amount", -1), ("channel", "fax")])  # fmt: skip
def test_out_of_range_fields_are_422_naming_the_field(client: TestClient, field, value) -> None:
    response = client.post("/v1/score", json=SEED_REQUEST | {field: value})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field


def test_broken_json_is_422_and_oversized_bodies_are_413(tmp_path: Path, registry) -> None:
    publish_small(registry, seed=1)
    with client_for(tmp_path, max_body_bytes=200) as c:
        broken = c.post(
            "/v1/score", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422
        huge = c.post("/v1/score", json=SEED_REQUEST | {"merchant_category": "x" * 300})
        assert huge.status_code == 413


def test_raw_events_use_and_update_the_online_state(client: TestClient) -> None:
    assert client.get("/v1/models").json()["features"]["clock"] is None  # no event yet
    first = client.post("/v1/score?explain=true", json=RAW).json()
    # Where the state's time stands: the latest event time seen.
    assert client.get("/v1/models").json()["features"]["clock"] == "2026-01-01T12:00:00+00:00"
    assert first["features"]["txn_count_10m"] == 0
    assert first["features"]["avg_amount_30d"] is None  # cold start is NaN, sent as null
    second_event = RAW | {"transaction_id": "t2", "event_time": "2026-01-01T12:01:00Z"}
    second = client.post("/v1/score?explain=true", json=second_event).json()
    assert second["features"]["txn_count_10m"] == 1
    assert second["features"]["device_seen_before_30d"] == 1.0
    retry = client.post("/v1/score?explain=true", json=second_event).json()
    assert retry["features"] == second["features"]  # idempotent per transaction_id


def test_card_without_transaction_id_is_422_naming_it(client: TestClient) -> None:
    response = client.post("/v1/score", json={"card_id": "c1", "merchant_id": "m", "amount": 1})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "transaction_id"]


def test_a_challenger_is_scored_in_shadow(tmp_path: Path, registry: Registry) -> None:
    publish_small(registry, seed=1)
    challenger, _ = publish_small(registry, seed=2, minute=1)
    with client_for(tmp_path) as c:
        body = c.post("/v1/score", json=SEED_REQUEST).json()
        assert 0.0 <= body["shadow_fraud_probability"] <= 1.0
        assert c.get("/v1/models").json()["challenger"] == challenger
    log = next((tmp_path / "scored").glob("scored-*.jsonl")).read_text().splitlines()
    record = json.loads(log[0])
    assert record["challenger_version"] == challenger
    assert record["scored_by"] == "model"
    assert record["state"] == "stateless"  # no card: nothing of the online state involved
    assert 0 < record["champion_threshold"] < 1
    assert record["champion_call_us"] > 0 and record["challenger_call_us"] > 0


def test_forced_open_circuit_answers_with_the_heuristic(tmp_path: Path, registry) -> None:
    publish_small(registry, seed=1)
    with client_for(tmp_path, force_circuit_open=True) as c:
        body = c.post("/v1/score", json=SEED_REQUEST).json()
    assert body["scored_by"] == "heuristic"
    assert body["circuit_breaker_state"] == "open"


def test_injected_latency_is_cut_at_the_deadline_and_opens_the_breaker(
    tmp_path: Path, registry: Registry
) -> None:
    publish_small(registry, seed=1)
    with client_for(tmp_path, inject_latency_ms=200, circuit_threshold_ms=60) as c:
        for i in range(25):
            body = c.post("/v1/score", json=SEED_REQUEST | {"amount": float(i)}).json()
            # Had the call not been cut at the deadline, the model would have answered after
            # its 200 ms. How fast the answer comes is a figure for `make bench`, not a test.
            assert body["scored_by"] == "heuristic"
        breaker = c.get("/v1/models").json()["breaker"]
        assert breaker["state"] == "open"
        assert breaker["short_circuited"] >= 5


def test_admin_reload_requires_the_token(client: TestClient, registry: Registry) -> None:
    missing = client.post("/admin/reload")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401  # RFC 6750: an unknown token is unauthenticated
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    challenger, _ = publish_small(registry, seed=3, minute=2)
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200
    assert ok.json()["challenger"] == challenger


def test_feedback_is_accepted_and_counted(client: TestClient) -> None:
    client.post("/v1/score", json=RAW)
    label = {"transaction_id": "t1", "is_fraud": True, "label_time": "2026-01-02T00:00:00Z"}
    assert client.post("/v1/feedback", json=label).json()["outcome"] == "applied"
    unknown = label | {"transaction_id": "never-scored"}
    assert client.post("/v1/feedback", json=unknown).json()["outcome"] == "unknown"
    assert client.post("/v1/feedback", json={"is_fraud": True}).status_code == 422


def test_batch_scores_in_order(client: TestClient) -> None:
    second = RAW | {"transaction_id": "t2", "event_time": "2026-01-01T12:01:00Z"}
    body = client.post("/v1/score/batch?explain=true", json={"events": [RAW, second]}).json()
    counts = [r["features"]["txn_count_10m"] for r in body["results"]]
    assert counts == [0, 1]
    third = RAW | {"transaction_id": "t3", "event_time": "2026-01-01T12:02:00Z"}
    bad = client.post("/v1/score/batch", json={"events": [third, {"amount": -1}]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "events.1.amount"]
    empty = client.post("/v1/score/batch", json={"events": []})
    assert empty.status_code == 200 and empty.json() == {"results": []}
    assert client.get("/v1/models").json()["batching"]["model_calls"] == 1  # no empty call
    for body in (b"[1, 2]", b"{not json", b'{"events": 3}'):
        refused = client.post(
            "/v1/score/batch", content=body, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "events"]
    no_id = client.post("/v1/score/batch", json={"events": [third, {"card_id": "c9", "amount": 1}]})
    assert [d["loc"] for d in no_id.json()["detail"]] == [  # each missing id on its own
        ["body", "events.1.transaction_id"], ["body", "events.1.merchant_id"],
    ]  # fmt: skip
    # Neither refused batch changed any state: t3 is still unseen.
    after = client.post("/v1/score?explain=true", json=third).json()
    assert after["features"]["txn_count_10m"] == 2


def _samples(client: TestClient) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_expose_decisions_requests_scores_and_reloads(
    tmp_path: Path, registry: Registry
) -> None:
    publish_small(registry, seed=1)
    publish_small(registry, seed=2, minute=1)  # a challenger, scored in shadow
    with client_for(tmp_path) as client:
        for i in range(3):
            client.post("/v1/score", json=SEED_REQUEST | {"amount": float(i)})
        client.post("/v1/score/batch", json={"events": [SEED_REQUEST, SEED_REQUEST]})
        client.post("/v1/score", json={"amount": -1})  # 422
        client.post("/v1/score", content=b"{}", headers={"content-type": "text/plain"})  # 415
        client.get("/health")
        client.get("/v1/cards/4111111111111111")  # not a route: its path is no label
        service = client.app.state.service  # type: ignore[attr-defined]
        for _ in range(service.breaker.config.minimum_calls):
            service.breaker.record(True)  # closed -> open
        samples = _samples(client)
    decided = sum(v for k, v in samples.items() if k.startswith("sentinel_decisions_total"))
    assert decided == 5  # every scored event, batch members included
    assert samples['sentinel_scored_by_total{scored_by="model"}'] == 5
    requests = {k: v for k, v in samples.items() if k.startswith("sentinel_requests_total")}
    assert requests == {
        'sentinel_requests_total{route="/v1/score",status="200"}': 3,
        'sentinel_requests_total{route="/v1/score",status="422"}': 1,
        'sentinel_requests_total{route="/v1/score",status="415"}': 1,
        'sentinel_requests_total{route="/v1/score/batch",status="200"}': 1,
        'sentinel_requests_total{route="/health",status="200"}': 1,
        'sentinel_requests_total{route="unmatched",status="404"}': 1,
    }  # the scrape itself is counted once it has answered
    assert not any("4111" in k for k in samples)
    assert samples['sentinel_request_duration_seconds_count{route="/v1/score"}'] == 5
    assert samples['sentinel_request_duration_seconds_count{route="/v1/score/batch"}'] == 1
    assert samples['sentinel_request_duration_seconds_bucket{le="+Inf",route="/health"}'] == 1
    # Every answered score in its scorer's histogram; the challenger's shadow scores too.
    assert samples['sentinel_score_count{scorer="champion"}'] == 5
    assert samples['sentinel_score_count{scorer="challenger"}'] == 5
    assert samples['sentinel_score_count{scorer="heuristic"}'] == 0
    assert samples['sentinel_score_bucket{le="1.0",scorer="champion"}'] == 5
    assert 0 < samples['sentinel_score_sum{scorer="champion"}'] < 5
    assert samples['sentinel_reloads_total{outcome="loaded"}'] == 2
    assert samples['sentinel_breaker_state{state="open"}'] == 1
    assert samples['sentinel_breaker_state{state="closed"}'] == 0
    assert samples['sentinel_breaker_transitions_total{transition="closed->open"}'] == 1
    assert "sentinel_model_info" in "".join(samples)
    # prometheus_client's own collectors: the process, the interpreter, the collector.
    assert samples["process_resident_memory_bytes"] > 0
    assert 'python_gc_collections_total{generation="0"}' in samples
    assert any(k.startswith("python_info") for k in samples)


def test_metric_names_follow_prometheus_conventions(client: TestClient) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client.post("/v1/score", json=SEED_REQUEST)
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    ours = [f for f in families if f.name.startswith("sentinel_")]
    assert len(ours) >= 15
    for family in ours:
        if family.type == "histogram":  # a duration in seconds, or the scores (no unit)
            assert family.name.endswith("_seconds") or family.name == "sentinel_score", family
    # Read from the text itself (the parser strips one `_total`): every counter is exposed
    # with exactly one `_total`, as its samples are.
    text = client.get("/metrics").text
    counters = [
        line.split()[2] for line in text.splitlines()
        if line.startswith("# TYPE sentinel_") and line.endswith(" counter")
    ]  # fmt: skip
    assert len(counters) >= 10
    for name in counters:
        assert name.endswith("_total") and not name.endswith("_total_total"), name
    types = {f.name: f.type for f in ours}
    assert types["sentinel_breaker_transitions"] == "counter"
    assert types["sentinel_requests"] == "counter"
    assert types["sentinel_request_duration_seconds"] == "histogram"
    assert types["sentinel_score"] == "histogram"


def test_state_survives_a_restart(tmp_path: Path, registry: Registry) -> None:
    publish_small(registry, seed=1)
    with client_for(tmp_path) as c:
        c.post("/v1/score", json=RAW)
    with client_for(tmp_path) as c:
        event = RAW | {"transaction_id": "t2", "event_time": "2026-01-01T12:01:00Z"}
        body = c.post("/v1/score?explain=true", json=event).json()
    assert body["features"]["txn_count_10m"] == 1  # restored from the snapshot


def test_hot_swap_under_concurrent_requests(tmp_path: Path, registry: Registry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    old, _ = publish_small(registry, seed=1)
    with client_for(tmp_path) as c:

        def score(i: int) -> tuple[int, str]:
            r = c.post("/v1/score", json=SEED_REQUEST | {"amount": float(i)})
            return r.status_code, r.json().get("model_version", "")

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(score, i) for i in range(150)]
            new, _ = publish_small(registry, seed=4, minute=3)
            registry.set_pointer("champion", new)
            swapped = c.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            futures += [pool.submit(score, i) for i in range(150, 200)]
            results = [f.result() for f in futures]
    assert swapped.json()["champion"] == new
    assert all(status == 200 for status, _ in results)
    versions = {version for _, version in results}
    assert versions <= {old, new}
    assert results[-1][1] == new


def test_an_unreadable_state_snapshot_starts_cold_instead_of_failing(
    tmp_path: Path, registry: Registry
) -> None:
    publish_small(registry, seed=1)
    snapshot = tmp_path / "serving" / "feature_state.pkl"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"garbage")
    with client_for(tmp_path) as c:
        body = c.post("/v1/score?explain=true", json=RAW).json()
    assert body["features"]["txn_count_10m"] == 0


def test_other_methods_and_routes_still_go_through_fastapi(client: TestClient) -> None:
    assert client.get("/v1/score").status_code == 405
    # A near-miss path is FastAPI's redirect, not a score.
    assert client.post("/v1/score/", follow_redirects=False).status_code == 307
    paths = client.get("/openapi.json").json()["paths"]
    body = paths["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"amount", "card_id", "event_time"} <= set(body["properties"])
    assert "/v1/score/batch" in paths


def test_an_oversized_feedback_is_413(tmp_path: Path, registry: Registry) -> None:
    publish_small(registry, seed=1)
    with client_for(tmp_path, max_body_bytes=200) as c:
        label = {"transaction_id": "t" * 100, "is_fraud": True,
                 "label_time": "2026-01-02T00:00:00Z", "card_id": "c" * 100}  # fmt: skip
        too_big = c.post("/v1/feedback", json=label)
        assert too_big.status_code == 413  # in JSON, as documented
        assert too_big.json()["detail"] == "body larger than 200 bytes (SENTINEL_MAX_BODY_BYTES)"


def test_an_internal_error_is_a_json_500_that_leaks_nothing(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    async def broken(requests: object) -> None:
        raise RuntimeError("card 4000123412341234 exploded")

    service.scorer.score_many = broken
    for path, body in (("/v1/score", RAW), ("/v1/score/batch", {"events": [RAW]})):
        response = client.post(path, json=body)
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error"}


def test_logs_are_json_events_without_card_data(
    tmp_path: Path, registry: Registry, sentinel_logs: io.StringIO
) -> None:
    stream = sentinel_logs
    champion, _ = publish_small(registry, seed=1)
    (registry.root / "bundles" / "broken").mkdir(parents=True)
    with client_for(tmp_path, inject_latency_ms=100, circuit_threshold_ms=5) as c:
        secret = RAW | {"card_id": "4000123412341234", "transaction_id": "txn-secret-1"}
        for i in range(25):
            c.post("/v1/score", json=secret | {"transaction_id": f"txn-secret-{i}"})
        registry.set_pointer("challenger", "broken")
        c.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    names = {e["event"] for e in events}
    assert {"bundle_loaded", "bundle_rejected", "breaker_transition", "feature_state_saved"} <= (
        names
    )
    loaded = next(e for e in events if e["event"] == "bundle_loaded")
    assert loaded["version"] == champion and loaded["role"] == "champion"
    assert all({"ts", "level", "logger", "event"} <= set(e) for e in events)
    assert "4000123412341234" not in stream.getvalue()
    assert "txn-secret" not in stream.getvalue()


def test_the_breaker_half_opens_and_closes_when_the_model_is_fast_again(
    tmp_path: Path, registry: Registry
) -> None:
    publish_small(registry, seed=1)
    settings = {"inject_latency_ms": 200, "circuit_threshold_ms": 20, "breaker_open_wait_s": 0.3}
    with client_for(tmp_path, **settings) as c:
        for i in range(20):  # the minimum number of calls, all slow
            c.post("/v1/score", json=SEED_REQUEST | {"amount": float(i)})
        assert c.get("/v1/models").json()["breaker"]["state"] == "open"
        c.app.state.service.settings.inject_latency_ms = 0  # type: ignore[attr-defined]
        time.sleep(0.35)  # the open wait is over: the next calls are probes
        probes = [c.post("/v1/score", json=SEED_REQUEST).json() for _ in range(5)]
        assert all(p["scored_by"] == "model" for p in probes)
        breaker = c.get("/v1/models").json()["breaker"]
    assert breaker["state"] == "closed"
    assert breaker["transitions"] == {
        "closed->open": 1,
        "open->half_open": 1,
        "half_open->closed": 1,
    }


def test_the_background_loop_survives_a_failing_reload(tmp_path: Path) -> None:
    import asyncio

    from serving.service import Service, run_background

    service = Service(ServiceSettings(home=tmp_path, reload_interval_s=0.05))
    calls = []

    def broken_reload(retry_rejected: bool = False) -> bool:
        calls.append(1)
        raise OSError("registry unreadable")

    service.reload = broken_reload  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(run_background(service))
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(main())
    assert len(calls) >= 3  # it kept polling after the first failure


def test_the_background_loop_keeps_long_lived_state_out_of_full_collections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import gc

    from serving import service as service_module

    monkeypatch.setattr(service_module, "FREEZE_EVERY_S", 0.0)
    service = service_module.Service(ServiceSettings(home=tmp_path, reload_interval_s=0.05))
    gc.unfreeze()
    held = [[i] for i in range(1_000)]  # long-lived containers, as the online state's

    async def main() -> int:
        task = asyncio.create_task(service_module.run_background(service))
        for _ in range(600):  # generous: the loop turns every 50 ms
            await asyncio.sleep(0.05)
            if gc.get_freeze_count() >= len(held):
                break
        task.cancel()
        return gc.get_freeze_count()

    try:
        frozen = asyncio.run(main())
    finally:
        gc.unfreeze()
    assert frozen >= len(held)  # they were moved out of the collected generations


@pytest.mark.parametrize("token", [None, ""])
def test_admin_off_means_off(tmp_path: Path, token: str | None) -> None:
    """Unset or empty: the admin routes are disabled, whatever the request sends (an empty
    SENTINEL_ADMIN_TOKEN once let an empty bearer token in)."""
    with TestClient(create_app(ServiceSettings(home=tmp_path, admin_token=token))) as c:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            answer = c.post("/admin/reload", headers=headers)
            assert answer.status_code == 403
            detail = answer.json()["detail"]
            assert detail.startswith("admin is disabled:") and "SENTINEL_ADMIN_TOKEN" in detail


def test_a_short_admin_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServiceSettings(admin_token="short")
    monkeypatch.setenv("SENTINEL_ADMIN_TOKEN", "short")
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: invalid SENTINEL_* settings: SENTINEL_ADMIN_TOKEN must be at least 16 "
        "characters (unset it to disable the admin routes)"
    )


def _widest_event(i: int) -> dict:
    """A raw event with every field at its longest, its texts non-ASCII (which JSON encoders
    escape, 6 bytes a character): what the per-event room must hold."""
    pad, wide = f"{i:08d}", "\u00e9" * 120
    return {
        "transaction_id": wide + pad, "card_id": wide + pad, "merchant_id": wide + pad,
        "device_id": wide + pad, "merchant_category": "\u00e9" * 64, "currency": "\u00e9" * 8,
        "channel": "online", "amount": 49_999.123456789, "lat": -89.123456789,
        "lon": -179.123456789, "event_time": "2026-01-01T12:00:00.123456+00:00",
        "hour_of_day": 23, "days_since_last_txn": 1234.5678901, "txn_count_24h": 123456,
        "distinct_merchants_24h": 123456, "avg_amount_7d": 12345.6789012, "channel_online": 1,
    }  # fmt: skip


def test_a_full_batch_of_the_widest_events_fits_the_body_limit(
    tmp_path: Path, registry: Registry
) -> None:
    """With the shipped limits, the batch limit is reachable: 10,000 events with every field
    at its longest (~39 MB, far past the 1 MiB of the other routes) are scored, one more is a
    422 naming the count, and only a body past the derived limit is a 413."""
    publish_small(registry, seed=1)
    with client_for(tmp_path) as c:
        full = [_widest_event(i) for i in range(10_000)]
        assert all(len(json.dumps(e)) <= 4_096 for e in full)  # SENTINEL_MAX_EVENT_BYTES
        body = json.dumps({"events": full}).encode()
        assert len(body) > 35 * 1_048_576
        json_type = {"content-type": "application/json"}
        ok = c.post("/v1/score/batch", content=body, headers=json_type)
        assert ok.status_code == 200, ok.text[:200]
        assert len(ok.json()["results"]) == 10_000
        over = c.post("/v1/score/batch", json={"events": [*full, _widest_event(10_000)]})
        assert over.status_code == 422
        assert over.json()["detail"][0]["msg"] == "events: at most 10000 per batch"
        limit = 10_000 * 4_096 + 1_024
        padded = b'{"events": [' + b" " * limit + b"]}"
        huge = c.post("/v1/score/batch", content=padded, headers=json_type)
        assert huge.status_code == 413
        assert huge.json()["detail"] == (
            f"body larger than {limit} bytes (SENTINEL_MAX_BATCH_EVENTS x SENTINEL_MAX_EVENT_BYTES)"
        )
        described = c.get("/openapi.json").json()["paths"]["/v1/score/batch"]["post"]
        assert described["requestBody"]["description"] == (
            "At most 10,000 events (more: 422) and 40,961,024 bytes (larger: 413)."
        )


@pytest.mark.parametrize("value", ["1767225600", "1767225600000", " 1.7e9 "])
def test_an_epoch_number_in_a_string_is_not_a_timestamp(client: TestClient, value: str) -> None:
    answer = client.post("/v1/score", json=RAW | {"event_time": value})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "event_time"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_pages_load_nothing_from_the_internet(client: TestClient, page: str) -> None:
    import re

    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "http://" not in html.text and "https://" not in html.text  # no CDN, no fonts
    links = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert any(link.endswith(".js") for link in links)
    for link in links:  # every script, style and icon the page loads is served here
        assert link.startswith("/docs-assets/"), link
        asset = client.get(link)
        assert asset.status_code == 200 and len(asset.content) > 1000, link
    assert "'/openapi.json'" in html.text or '"/openapi.json"' in html.text
    if page == "/docs":
        assert '"validatorUrl": null' in html.text  # no badge fetched from swagger.io


def test_api_pages_behind_a_proxy_prefix_load_from_under_it(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(home=tmp_path, admin_token=ADMIN_TOKEN))
    with TestClient(app, root_path="/fraud") as prefixed:
        for page in ("/docs", "/redoc"):
            html = prefixed.get(page).text
            assert "/fraud/openapi.json" in html and "/fraud/docs-assets/" in html, page
