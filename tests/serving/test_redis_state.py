"""The shared online state on a real redis-server: exactly the in-process engine's features,
no lost update under concurrency, durability as Redis's own."""

import math
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
import redis

from serving.feature_engine import COUNTERS, EngineConfig, FeatureEngine
from serving.features import FEATURE_INDEX
from serving.redis_state import RedisFeatureEngine
from tests.redis_server import redis_server

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def identical(a: list[float], b: list[float]) -> bool:
    """Bit for bit, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True)
    )


def random_stream(seed: int, n: int, mean_gap_s: float) -> list[tuple[str, tuple]]:
    """Payments of 40 cards at 6 merchants (busy ones), with late events inside and beyond
    the allowed lateness, retried ids, and fraud and genuine labels, some stamped before
    their event (refused), some for ids long forgotten."""
    rng = random.Random(seed)
    t, ids, out = T0, [], []
    for _ in range(n):
        t += rng.expovariate(1 / mean_gap_s)
        event_time = t - rng.uniform(0, 400) if rng.random() < 0.1 else t
        retry = ids and rng.random() < 0.02
        txn = rng.choice(ids) if retry else f"t{rng.randrange(10**7)}"
        ids.append(txn)
        lat = math.nan if rng.random() < 0.3 else rng.uniform(-50, 50)
        out.append(("event", (
            txn, event_time, f"c{rng.randrange(40)}", f"m{rng.randrange(6)}",
            round(rng.uniform(1, 500), 2), rng.choice(["pos", "online", None]),
            rng.choice([None, "d1", "d2", f"d{rng.randrange(9)}"]), lat,
            rng.uniform(-50, 50), rng.choice([None, "grocery", "travel"]),
        )))  # fmt: skip
        if rng.random() < 0.05:
            labelled = rng.choice(ids[-50:] if rng.random() < 0.7 else ids)
            out.append(("label", (labelled, rng.random() < 0.7, t + rng.uniform(-100, 50))))
    return out


def replay(engine: FeatureEngine, stream: list[tuple[str, tuple]]) -> list[object]:
    answers: list[object] = []
    for kind, args in stream:
        if kind == "event":
            answers.append((engine.process(*args), engine.last_state))
        else:
            try:
                answers.append(engine.apply_label(*args))
            except ValueError as exc:
                answers.append(str(exc))
    return answers


@pytest.mark.parametrize(
    ("seed", "mean_gap_s"),
    [(1, 2.0), (2, 60.0), (3, 3600.0)],  # busy seconds; two days; 4 months: expiry, trims
)
def test_redis_engine_equals_the_in_process_engine_bit_for_bit(
    redis_url: str, seed: int, mean_gap_s: float
) -> None:
    stream = random_stream(seed, 2_500, mean_gap_s)
    reference = FeatureEngine()
    expected = replay(reference, stream)
    engine = RedisFeatureEngine.from_url(redis_url, prefix=f"parity{seed}:")
    got = replay(engine, stream)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        if isinstance(a, tuple):
            assert isinstance(b, tuple) and a[1] == b[1], i
            assert identical(a[0], b[0]), (i, stream[i])
        else:
            assert a == b, i
    counted = ("events", *COUNTERS)
    assert {k: engine.stats()[k] for k in counted} == {k: reference.stats()[k] for k in counted}
    latest = max(args[1] for kind, args in stream if kind == "event")
    assert engine.event_clock() == reference.event_clock() == latest
    assert reference.stats()["too_late"] > 0 or mean_gap_s > 60  # the stream has late events
    assert "applied" in expected
    assert "unknown" in expected or mean_gap_s < 3600  # ids forgotten after the dedup window


def test_a_batch_is_one_round_trip_with_each_event_seeing_the_ones_before(
    redis_url: str,
) -> None:
    stream = [args for kind, args in random_stream(7, 400, 30.0) if kind == "event"]
    reference = FeatureEngine()
    expected = [reference.process(*args) for args in stream]
    engine = RedisFeatureEngine.from_url(redis_url, prefix="batch:")
    got = engine.process_many(stream[:150]) + engine.process_many(stream[150:])
    assert all(identical(a, b) for a, (b, _, _) in zip(expected, got, strict=True))
    assert {p.state for p in got} == {"added", "duplicate", "too_late"}


def test_concurrent_workers_lose_no_update_on_one_card_and_one_merchant(redis_url: str) -> None:
    """Four clients (each its own connection, as workers are) hammer one card at one
    merchant. Every payment is counted, and every answer is exactly what one in-process
    engine gives when fed the events in the order Redis applied them."""
    per_worker, workers = 120, 4
    answers: dict[int, tuple[tuple, list[float]]] = {}
    lock = threading.Lock()

    def worker(w: int) -> None:
        engine = RedisFeatureEngine.from_url(redis_url, prefix="hammer:")
        rng = random.Random(w)
        for i in range(per_worker):
            args = (f"w{w}-{i:04d}", T0 + rng.uniform(0, 60), "hot-card", "hot-shop",
                    float(rng.randrange(1, 100)), None, None, math.nan, math.nan, None)  # fmt: skip
            vector = engine.process(*args)
            with lock:
                answers[engine.last_seq] = (args, vector)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = per_worker * workers
    assert sorted(answers) == list(range(1, total + 1))
    reference = FeatureEngine()
    for seq in sorted(answers):
        args, vector = answers[seq]
        assert identical(reference.process(*args), vector), seq
    probe = RedisFeatureEngine.from_url(redis_url, prefix="hammer:")
    final = probe.process("probe", T0 + 61.0, "hot-card", "hot-shop", 1.0)
    assert final[FEATURE_INDEX["txn_count_10m"]] == total
    assert final[FEATURE_INDEX["merchant_txn_count_1h"]] == total
    amounts = sum(args[4] for args, _ in answers.values())
    assert final[FEATURE_INDEX["amount_sum_1h"]] == pytest.approx(amounts, abs=1e-9)


def test_a_busy_merchant_moves_a_constant_number_of_bytes_per_event(redis_url: str) -> None:
    """The reply for a merchant's payment does not grow with the merchant's volume."""
    engine = RedisFeatureEngine.from_url(redis_url, prefix="busy:")
    sizes = []
    for i in range(4_000):  # one merchant, a payment a second for 4,000 s, each a new card
        args = (f"b{i:05d}", T0 + i, f"card{i}", "mega-shop", 5.0, None, None, math.nan,
                math.nan, None)  # fmt: skip
        reply = engine._event_script(args=engine._event_args(args, ""))
        sizes.append(len(repr(reply)))
        engine._vector_from(args, reply)
    assert sizes[-1] <= sizes[10] + 16  # a few more digits in the counts, nothing more
    vector = engine.process("last", T0 + 4_000, "card-x", "mega-shop", 5.0)
    assert vector[FEATURE_INDEX["merchant_txn_count_1h"]] == 3_599  # (T0 + 400, T0 + 4000)
    assert vector[FEATURE_INDEX["merchant_distinct_cards_1h"]] == 3_599


def test_idle_keys_expire_after_the_longest_window(redis_url: str) -> None:
    engine = RedisFeatureEngine.from_url(redis_url, prefix="ttl:")
    engine.process("x1", T0, "card-ttl", "shop-ttl", 3.0)
    client = redis.Redis.from_url(redis_url)
    ttl_ms = client.pttl("ttl:ce:card-ttl")
    reach_ms = engine.config.features.longest_reach_s() * 1000
    assert reach_ms < ttl_ms <= reach_ms + 3 * 86_400_000
    assert 0 < client.pttl("ttl:t:x1") <= (2 + 2) * 86_400_000


def test_state_survives_a_redis_restart_with_appendonly(tmp_path: Path) -> None:
    """Durability is Redis's: with AOF, a killed and restarted Redis keeps every update."""
    config = EngineConfig()
    stream = [args for kind, args in random_stream(11, 200, 30.0) if kind == "event"]
    reference = FeatureEngine(config=config)
    for args in stream:
        reference.process(*args)
    from tests.net import free_port

    port = free_port()
    with redis_server(tmp_path / "aof", appendonly=True, port=port) as url:
        engine = RedisFeatureEngine.from_url(url, config)
        engine.process_many(stream)
    with redis_server(tmp_path / "aof", appendonly=True, port=port) as url:  # killed, restarted
        engine = RedisFeatureEngine.from_url(url, config)
        probe = ("probe", stream[-1][1] + 1.0, stream[-1][2], stream[-1][3], 9.0, None, None,
                 math.nan, math.nan, None)  # fmt: skip
        assert identical(engine.process(*probe), reference.process(*probe))


def test_the_cap_evicts_the_least_recently_used_card_for_every_worker(redis_url: str) -> None:
    engine = RedisFeatureEngine.from_url(redis_url, prefix="cap:")
    engine.limit_state(max_cards=3, max_merchants=100)
    hour = 3_600.0  # (the index keeps last use to the hour)
    for i, card in enumerate(["a", "b", "c"]):
        engine.process(f"{card}1", T0 + i * hour, card, "shop", 10.0)
    engine.process("a2", T0 + 3 * hour, "a", "shop", 10.0)  # used again: b is now the oldest
    engine.process("d1", T0 + 4 * hour, "d", "shop", 10.0)  # a 4th card: b goes
    stats = engine.state_stats()
    assert stats["cards"] == 3
    assert stats["evicted"]["card"] == {"cap": 1}
    assert stats["limits"] == {"card": 3, "merchant": 100}
    other = RedisFeatureEngine.from_url(redis_url, prefix="cap:")  # another worker sees it
    other.limit_state(max_cards=3, max_merchants=100)  # (workers share their settings)
    days = FEATURE_INDEX["txn_count_24h"]
    assert other.process("b2", T0 + 5 * hour, "b", "shop", 10.0)[days] == 0  # b starts cold
    assert other.process("a3", T0 + 6 * hour, "a", "shop", 10.0)[days] == 2  # a kept its history
    assert redis.Redis.from_url(redis_url).exists("cap:ce:c") == 0  # b's return evicted c


def test_a_service_whose_redis_is_down_answers_503_naming_the_store(tmp_path: Path) -> None:
    """Scoring and feedback that need the state are refused, never answered from part of
    it; readiness says why; a request without a card is still scored."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.registry import Registry
    from serving.settings import ServiceSettings
    from tests.net import free_port
    from tests.serving.bundles import SEED_REQUEST, publish_small

    publish_small(Registry(tmp_path / "registry"), seed=1)
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = ServiceSettings(home=tmp_path, redis_url=dead)
    with TestClient(create_app(settings)) as client:
        raw = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 5.0}
        for path, body in (("/v1/score", raw), ("/v1/score/batch", {"events": [raw, raw]})):
            response = client.post(path, json=body)
            assert response.status_code == 503, path
            assert "Redis state store" in response.json()["detail"]
        label = {"transaction_id": "t1", "is_fraud": True, "label_time": "2026-01-02T00:00:00Z"}
        response = client.post("/v1/feedback", json=label)
        assert response.status_code == 503
        assert "Redis state store" in response.json()["detail"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and "Redis" in ready.json()["reason"]
        assert client.post("/v1/score", json=SEED_REQUEST).status_code == 200
        models = client.get("/v1/models")
        assert models.status_code == 200 and "Redis" in models.json()["state"]["unavailable"]
        assert client.get("/metrics").status_code == 200
        assert not (tmp_path / "serving" / "journal").exists()  # Redis mode keeps no journal


def _both(redis_url: str, prefix: str, events: list[tuple]) -> list[tuple[list[float], str]]:
    """Each event through the in-process engine and Redis; asserts they agree, returns the
    in-process answers."""
    reference, engine = FeatureEngine(), RedisFeatureEngine.from_url(redis_url, prefix=prefix)
    answers = []
    for e in events:
        args = (*e, None, None, math.nan, math.nan, None)
        expected, got = reference.process(*args), engine.process(*args)
        assert identical(expected, got) and reference.last_state == engine.last_state, e
        answers.append((expected, reference.last_state))
    return answers


def test_a_retry_does_not_slide_the_merchant_hour(redis_url: str) -> None:
    """A retry of an event is not added, so it must not move the hour: a later, slightly
    earlier event still sees the card whose payment the retry's hour had left behind."""
    cards = FEATURE_INDEX["merchant_distinct_cards_1h"]
    answers = _both(redis_url, "retry:", [
        ("A", T0, "c1", "M", 1.0),
        ("B", T0 + 1800, "c2", "M", 1.0),
        ("X", T0 + 5400, "c3", "N", 1.0),
        ("X", T0 + 5400, "c3", "M", 1.0),  # a retry of X (at another merchant): duplicate
        ("C", T0 + 5200, "c4", "M", 1.0),  # in the allowed lateness: (T0 + 1600, T0 + 5200)
    ])  # fmt: skip
    assert answers[3][1] == "duplicate"
    assert answers[4][0][cards] == 1  # c2's payment at T0 + 1800


def test_an_id_reused_after_the_dedup_window_is_a_new_payment(redis_url: str) -> None:
    day = 86_400.0
    count = FEATURE_INDEX["merchant_txn_count_30d_lagged"]
    answers = _both(redis_url, "reuse:", [
        ("same-id", T0, "c1", "M", 1.0),
        ("other", T0 + 3 * day, "c1", "M", 1.0),
        ("same-id", T0 + 3 * day + 1, "c1", "M", 1.0),  # past the 2-day window: added again
        ("probe", T0 + 11 * day, "c9", "M", 1.0),  # its lagged 30 days: (T0 - 26d, T0 + 4d]
    ])  # fmt: skip
    assert answers[2][1] == "added"
    assert answers[3][0][count] == 3


def test_ids_with_nul_are_refused_before_they_reach_the_state() -> None:
    from serving.feature_engine import parse_event
    from serving.schemas import FeedbackRequest, ScoreRequest

    for field in ("transaction_id", "card_id", "merchant_id", "device_id"):
        with pytest.raises(pydantic.ValidationError, match=field):
            ScoreRequest.model_validate({"amount": 1.0, field: "a\x00b"})
        event = {"transaction_id": "t", "event_time": T0, "card_id": "c", "merchant_id": "m",
                 "amount": 1.0, field: "a\x00b"}  # fmt: skip
        with pytest.raises(ValueError, match=f"^{field}:"):
            parse_event(event)
    with pytest.raises(pydantic.ValidationError, match="transaction_id"):
        FeedbackRequest.model_validate(
            {"transaction_id": "t\x00", "is_fraud": True, "label_time": "2026-01-01T00:00:00Z"}
        )


def test_a_card_whose_keys_were_partly_evicted_still_answers(redis_url: str) -> None:
    """If Redis evicts one of a card's keys (a maxmemory policy other than the documented
    noeviction), the script must not fail half-way: the card continues from what is left."""
    engine = RedisFeatureEngine.from_url(redis_url, prefix="partial:")
    for i in range(3):
        engine.process(f"p{i}", T0 + i * 40 * 86_400.0, "card-p", "shop-p", 2.0)  # trims
    redis.Redis.from_url(redis_url).delete("partial:ce:card-p")
    vector = engine.process("p9", T0 + 121 * 86_400.0, "card-p", "shop-p", 2.0)
    assert engine.last_state == "added"
    assert vector[FEATURE_INDEX["txn_count_30d"]] == 0


def test_an_event_ahead_of_the_shared_clock_is_refused_and_writes_nothing(
    redis_url: str,
) -> None:
    """Each host checks its own clock; Redis's clock is the shared one, so a host whose clock
    runs ahead cannot move every host's state clock."""
    import time as wall

    engine = RedisFeatureEngine.from_url(redis_url, prefix="ahead:", max_clock_skew_s=60)
    with pytest.raises(ValueError, match=r"^event_time: .* ahead of the shared state's clock"):
        engine.process("far", wall.time() + 3_600, "card-a", "shop-a", 1.0)
    assert redis.Redis.from_url(redis_url).keys("ahead:*") == []
    engine.process("now", wall.time(), "card-a", "shop-a", 1.0)
    assert engine.last_state == "added"


def test_a_hung_redis_is_a_503_within_the_timeout_not_a_stalled_worker() -> None:
    """A server that accepts connections and never answers (a stopped Redis)."""
    import socket

    from serving.state_store import StateStoreError

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        engine = RedisFeatureEngine.from_url(url, timeout_s=0.2)
        with pytest.raises(StateStoreError, match="Redis state store failed: TimeoutError"):
            engine.process("t", T0, "c", "m", 1.0)
        assert engine.unavailable() is not None


def test_events_are_sent_again_when_redis_has_forgotten_the_script(redis_url: str) -> None:
    """Scripts go as plain EVALSHA (no `SCRIPT EXISTS` round trip first): after a Redis
    restart or `SCRIPT FLUSH` they answer NOSCRIPT without running, and are loaded and sent
    again: a single event, one carrying queued answers, and a batch."""
    client = redis.Redis.from_url(redis_url)
    engine = RedisFeatureEngine.from_url(redis_url, prefix="noscript:")
    reference = FeatureEngine()
    calls: list[list[tuple]] = [
        [("n1", T0, "c1", "m1", 1.0)],
        [("n2", T0 + 1, "c1", "m1", 2.0)],  # carries n1's answer
        [("n3", T0 + 2, "c1", "m1", 3.0), ("n4", T0 + 3, "c2", "m1", 4.0)],
    ]
    for i, call in enumerate(calls):
        client.script_flush()
        events = [(*e, None, None, math.nan, math.nan, None) for e in call]
        got = engine.process_many(events, ["fp"] * len(events))
        for e, one in zip(events, got, strict=True):
            assert identical(one.vector, reference.process(*e)) and one.state == "added"
        engine.remember_answers([(e[0], "fp", b"answer-%d" % i) for e in call])
    assert engine.flush_answers() == 2
    expected = [b"answer-0", b"answer-1", b"answer-2", b"answer-2"]
    assert client.mget([f"noscript:a:n{i}" for i in range(1, 5)]) == expected
