"""The shared online state on a real redis-server: exactly the in-process engine's features,
no lost update under concurrency, durability as Redis's own."""

import math
import random
import threading
from collections.abc import Iterator
from pathlib import Path

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
    assert all(identical(a, b) for a, (b, _) in zip(expected, got, strict=True))
    assert {state for _, state in got} == {"added", "duplicate", "too_late"}


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
        reply = engine._event_script(args=engine._event_args(args))
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
