"""Retries are idempotent with a fingerprint: the same transaction_id with the same body gets
the answer stored for it; with another body it is refused (409) and nothing changes. On the
in-memory engine (kept across snapshots and the journal) and on a real redis-server (shared
by every worker, once the worker's queued answer is written: with its next call's pipeline,
its idle flush or its stop)."""

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from serving.feature_engine import FeatureEngine, RefusedEvent
from serving.journal import Journal, replay
from serving.redis_state import RedisFeatureEngine
from serving.registry import Registry
from serving.resolve import event_args, event_timestamp, fingerprint
from serving.retries import ConflictingEvent
from serving.schemas import ScoreRequest
from tests.redis_server import redis_server
from tests.serving.bundles import publish_small
from tests.serving.test_app import RAW, client_for

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
NAN = math.nan


def event(txn: str, t: float = T0, card: str = "c1", merchant: str = "m1", amount: float = 10.0):
    return (txn, t, card, merchant, amount, "online", "d1", NAN, NAN, "grocery")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


_prefixes = iter(range(1_000_000))


@pytest.fixture(params=["in_memory", "redis"])
def engine(request: pytest.FixtureRequest) -> FeatureEngine:
    if request.param == "in_memory":
        return FeatureEngine()
    url = request.getfixturevalue("redis_url")
    return RedisFeatureEngine.from_url(url, prefix=f"idem{next(_prefixes)}:")


def shared_clock(engine: FeatureEngine) -> float:
    """The clock every worker sees: Redis's shared one, or the in-process engine's."""
    if isinstance(engine, RedisFeatureEngine):
        return float(engine.client.hget(engine.prefix + "g", "clock"))
    return engine.clock


# -- the engines ---------------------------------------------------------------------------


def test_a_retry_with_the_same_body_gets_the_first_stored_answer(engine: FeatureEngine) -> None:
    (first,) = engine.process_many([event("t1")], ["fp-a"])
    assert (first.state, first.answer) == ("added", None)
    (early,) = engine.process_many([event("t1")], ["fp-a"])  # before its answer is stored
    assert (early.state, early.answer) == ("duplicate", None)
    assert early.vector == first.vector  # scored again on the same features
    engine.remember_answers([("t1", "fp-a", b'{"answer":1}')])
    engine.remember_answers([("t1", "fp-a", b'{"answer":2}')])  # never replaces the first
    (retry,) = engine.process_many([event("t1")], ["fp-a"])
    assert (retry.state, retry.answer) == ("duplicate", b'{"answer":1}')
    assert engine.stats()["duplicates"] == 2


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"amount": 11.0}, "a field other than card_id, merchant_id and event_time changed"),
        ({"t": T0 + 30}, "(event_time changed)"),
        ({"card": "c2", "merchant": "m2"}, "(card_id, merchant_id changed)"),
    ],
)
def test_a_retry_with_another_body_is_refused_naming_what_changed_and_changes_nothing(
    engine: FeatureEngine, changed: dict, named: str
) -> None:
    engine.process_many([event("t1")], ["fp-a"])
    stats, clock = engine.stats(), shared_clock(engine)
    with pytest.raises(ConflictingEvent) as refused:
        engine.process_many([event("t1", **changed)], ["fp-b"])
    assert refused.value.index == 0
    assert refused.value.message.startswith("transaction_id: 't1' was already scored with a ")
    assert named in refused.value.message
    assert engine.stats() == stats  # not counted, not stored
    assert shared_clock(engine) == clock  # a later event_time did not move the clock
    (again,) = engine.process_many([event("t1")], ["fp-a"])  # the original still stands
    assert again.state == "duplicate"


def test_a_batch_with_a_conflict_is_refused_whole_before_any_event_is_processed(
    engine: FeatureEngine,
) -> None:
    engine.process_many([event("t1")], ["fp-a"])
    stats = engine.stats()
    batch = [event("t2", T0 + 1), event("t1", amount=99.0), event("t3", T0 + 2)]
    with pytest.raises(ConflictingEvent) as refused:
        engine.process_many(batch, ["fp-2", "fp-b", "fp-3"])
    assert refused.value.index == 1
    # Two events of one batch with one id and two bodies: the second is the conflict.
    with pytest.raises(ConflictingEvent) as within:
        engine.process_many([event("t5", T0 + 5), event("t5", T0 + 5, amount=1.0)], ["x", "y"])
    assert within.value.index == 1
    assert engine.stats() == stats
    states = [p.state for p in engine.process_many([event("t2", T0 + 1), event("t5", T0 + 5)],
                                                   ["fp-2", "x"])]  # fmt: skip
    assert states == ["added", "added"]  # neither refused batch stored anything
    same = engine.process_many([event("t6", T0 + 6), event("t6", T0 + 6)], ["z", "z"])
    assert [p.state for p in same] == ["added", "duplicate"]


def test_without_a_fingerprint_any_body_is_a_retry(engine: FeatureEngine) -> None:
    """Ids remembered before fingerprints existed (older journals, snapshots, Redis keys)
    carry none: a retry of theirs is never refused."""
    engine.process_many([event("t1")], [""])
    (retry,) = engine.process_many([event("t1", amount=50.0)], ["fp-b"])
    assert retry.state == "duplicate"
    engine.process_many([event("t2", T0 + 1)], ["fp-a"])
    (unchecked,) = engine.process_many([event("t2", T0 + 1, amount=50.0)], [""])
    assert unchecked.state == "duplicate"


@pytest.mark.parametrize("new_fingerprint", ["fp-b", ""])
def test_an_id_forgotten_after_the_dedup_window_is_a_new_payment(
    engine: FeatureEngine, new_fingerprint: str
) -> None:
    engine.process_many([event("t1")], ["fp-a"])
    engine.remember_answers([("t1", "fp-a", b'{"old":1}')])
    later = T0 + engine.config.dedup_window_s + 3_600
    engine.process_many([event("t-later", later)], ["fp-x"])
    reused = event("t1", later + 1, amount=7.0)
    (new,) = engine.process_many([reused], [new_fingerprint])
    assert (new.state, new.answer) == ("added", None)  # not the earlier payment's answer
    (early,) = engine.process_many([reused], [new_fingerprint])
    assert (early.state, early.answer) == ("duplicate", None)
    engine.remember_answers([("t1", new_fingerprint, b'{"new":2}')])
    (retry,) = engine.process_many([reused], [new_fingerprint])
    assert (retry.state, retry.answer) == ("duplicate", b'{"new":2}')


def test_redis_keys_stay_readable_by_the_version_before(redis_url: str) -> None:
    """Ids keep their earlier layout (a worker of the previous version, in a rolling deploy
    or after a rollback, reads them), and ids written by such a worker (no fingerprint)
    are retries whatever the body."""
    engine = RedisFeatureEngine.from_url(redis_url, prefix="old-keys:")
    engine.process_many([event("t1")], ["fp-a"])
    client = redis.Redis.from_url(redis_url)
    assert client.get("old-keys:t:t1") == b"c1\0m1\0" + repr(T0).encode()
    assert engine.apply_label("t1", True, T0 + 60) == "applied"  # attributed by the id
    client.delete("old-keys:f:t1")  # as the version before wrote it
    (retry,) = engine.process_many([event("t1", amount=5.0)], ["fp-b"])
    assert retry.state == "duplicate"


def test_a_redis_batch_racing_a_conflict_applies_nothing_after_it(redis_url: str) -> None:
    """The conflict another worker creates between a batch's check and its scripts: the
    events before it were applied (documented), none after it."""
    engine = RedisFeatureEngine.from_url(redis_url, prefix="race:")
    other = RedisFeatureEngine.from_url(redis_url, prefix="race:")
    checked = engine._remembered_of

    def check_then_race(events):
        found = checked(events)
        other.process_many([event("t2", T0 + 2)], ["fp-other"])  # sent meanwhile
        return found

    engine._remembered_of = check_then_race  # type: ignore[method-assign]
    batch = [event("t1", T0 + 1), event("t2", T0 + 2), event("t3", T0 + 3)]
    with pytest.raises(ConflictingEvent) as refused:
        engine.process_many(batch, ["fp-1", "fp-2", "fp-3"])
    assert refused.value.index == 1
    states = [p.state for p in other.process_many([event("t1", T0 + 1)], ["fp-1"])]
    states += [p.state for p in other.process_many([event("t3", T0 + 3)], ["fp-3"])]
    assert states == ["duplicate", "added"]  # t1 was applied, t3 was not


# -- Redis: answers queued, written with the next call's pipeline or a flush -------------------


def _answer_seen_by(other: RedisFeatureEngine, e: tuple, fp: str) -> bytes | None:
    """What a retry on another worker (its own engine, nothing queued) gets back."""
    (retry,) = other.process_many([e], [fp])
    assert retry.state == "duplicate"  # recognized either way: its script stored `P.f`
    return retry.answer


def test_a_queued_answer_reaches_other_workers_with_the_next_call_or_a_flush(
    redis_url: str,
) -> None:
    worker = RedisFeatureEngine.from_url(redis_url, prefix="queued:")
    other = RedisFeatureEngine.from_url(redis_url, prefix="queued:")
    worker.process_many([event("t1")], ["fp-1"])
    worker.remember_answers([("t1", "fp-1", b'{"p":1}')])  # queued: nothing sent
    assert _answer_seen_by(other, event("t1"), "fp-1") is None  # scored again, not replayed
    worker.process_many([event("t2", T0 + 1)], ["fp-2"])  # its pipeline carries the answer
    assert _answer_seen_by(other, event("t1"), "fp-1") == b'{"p":1}'
    # A batch carries them too, in call order (the first answer kept for an id stays).
    worker.remember_answers([("t2", "fp-2", b'{"p":2}'), ("t2", "fp-2", b'{"p":"later"}')])
    worker.process_many([event("t3", T0 + 2), event("t4", T0 + 3)], ["fp-3", "fp-4"])
    assert _answer_seen_by(other, event("t2", T0 + 1), "fp-2") == b'{"p":2}'
    # With no call to carry it, `flush_answers` writes it (the service's idle flush, stop).
    worker.remember_answers([("t3", "fp-3", b'{"p":3}')])
    assert _answer_seen_by(other, event("t3", T0 + 2), "fp-3") is None
    assert worker.flush_answers() == 1
    assert worker.answers_due_in(0.0) is None and worker.flush_answers() == 0  # none left
    assert _answer_seen_by(other, event("t3", T0 + 2), "fp-3") == b'{"p":3}'
    # A retry on the worker that queued an answer gets it: its own pipeline carries it first.
    worker.remember_answers([("t4", "fp-4", b'{"p":4}')])
    (retry,) = worker.process_many([event("t4", T0 + 3)], ["fp-4"])
    assert (retry.state, retry.answer) == ("duplicate", b'{"p":4}')


def test_a_conflict_or_a_refused_batch_does_not_drop_the_queued_answers(redis_url: str) -> None:
    import time

    worker = RedisFeatureEngine.from_url(redis_url, prefix="refused:")
    other = RedisFeatureEngine.from_url(redis_url, prefix="refused:")
    worker.process_many([event("t1"), event("t2", T0 + 1)], ["fp-1", "fp-2"])
    worker.remember_answers([("t1", "fp-1", b'{"p":1}')])
    # A batch refused before anything is sent (its conflict is found first): still queued.
    with pytest.raises(ConflictingEvent):
        worker.process_many([event("t5", T0 + 5), event("t1", amount=2.0)], ["fp-5", "fp-x"])
    assert worker.answers_due_in(0.0) is not None
    # A call its script refuses (here a conflict): the answers went ahead of it.
    with pytest.raises(ConflictingEvent):
        worker.process_many([event("t1", amount=2.0)], ["fp-x"])
    assert worker.answers_due_in(0.0) is None
    assert _answer_seen_by(other, event("t1"), "fp-1") == b'{"p":1}'
    # A batch refused part-way by Redis's clock: the answers went ahead of it too.
    worker.remember_answers([("t2", "fp-2", b'{"p":2}')])
    ahead = event("t9", time.time() + 3_600)
    with pytest.raises(RefusedEvent) as refused:
        worker.process_many([event("t6", T0 + 6), ahead], ["fp-6", "fp-9"])
    assert refused.value.index == 1
    assert _answer_seen_by(other, event("t2", T0 + 1), "fp-2") == b'{"p":2}'


def test_a_write_redis_refuses_is_reported_and_the_call_that_carried_it_answers(
    redis_url: str,
) -> None:
    """A worker whose Redis user may not write answers (an ACL: a genuine error reply for
    the `SET`s only): the call that carried them still gets its own reply."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("no-answers", enabled=True, passwords=["+pw"], commands=["+@all"],
                      keys=["%R~*", "~denied:[^a]*"])  # fmt: skip
    full = RedisFeatureEngine.from_url(redis_url, prefix="denied:")
    url = redis_url.replace("redis://", "redis://no-answers:pw@")
    worker = RedisFeatureEngine.from_url(url, prefix="denied:")
    lost: list[tuple[int, str]] = []
    worker.answers_not_kept = lambda count, error: lost.append((count, error))
    full.process_many([event("t1")], ["fp-1"])
    worker.remember_answers([("t1", "fp-1", b'{"p":1}')])
    (retry,) = worker.process_many([event("t1")], ["fp-1"])  # a retry: writes only `P.g`
    assert (retry.state, retry.answer) == ("duplicate", None)
    assert lost == [(1, "the Redis state store failed: NoPermissionError")]
    worker.remember_answers([("t1", "fp-1", b'{"p":1}')])
    assert worker.flush_answers() == 1  # the flush reports it the same way, never raises
    assert lost[1] == (1, "the Redis state store failed: NoPermissionError")
    assert _answer_seen_by(full, event("t1"), "fp-1") is None


def test_answers_aboard_a_round_trip_that_fails_are_reported_with_the_calls_failure(
    tmp_path: Path,
) -> None:
    """Redis gone: the call fails for its own event (a 503), and the answers it carried
    are reported as not kept, not queued again."""
    from serving.state_store import StateStoreError

    with redis_server(tmp_path / "redis") as url:
        worker = RedisFeatureEngine.from_url(url, prefix="gone:")
        lost: list[tuple[int, str]] = []
        worker.answers_not_kept = lambda count, error: lost.append((count, error))
        worker.process_many([event("t1")], ["fp-1"])
        worker.remember_answers([("t1", "fp-1", b'{"p":1}')])
    with pytest.raises(StateStoreError):
        worker.process_many([event("t2", T0 + 1)], ["fp-2"])
    assert lost == [(1, "the Redis state store failed: ConnectionError")]
    assert worker.answers_due_in(0.0) is None and worker.flush_answers() == 0


def test_stored_answers_survive_a_snapshot_and_a_journal_replay(tmp_path: Path) -> None:
    engine = FeatureEngine()
    journal = Journal(tmp_path / "journal")
    assert journal.lock()
    journal.start()
    for txn, t, answer in (("t1", T0, b'{"p":0.1}'), ("t2", T0 + 1, b'{"p":0.2}')):
        engine.process_many([event(txn, t)], ["fp-" + txn])
        journal.event(event(txn, t))
        engine.remember_answers([(txn, "fp-" + txn, answer)])
        journal.answer(txn, "fp-" + txn, answer)
    journal.write()
    engine.snapshot(tmp_path / "state.pkl")
    restored = FeatureEngine.restore(tmp_path / "state.pkl")
    replayed = FeatureEngine()
    assert replay(replayed, tmp_path / "journal").lines == 4
    for again in (restored, replayed):
        (retry,) = again.process_many([event("t2", T0 + 1)], ["fp-t2"])
        assert retry.answer == b'{"p":0.2}'
        with pytest.raises(ConflictingEvent):
            again.process_many([event("t1", amount=3.0)], ["fp-other"])
    # The id records keep their earlier layout: the version before reads these files.
    assert restored.store.table("txn")["t1"] == ("c1", "m1", T0)
    (segment,) = (tmp_path / "journal").glob("segment-*.jsonl")
    assert len(json.loads(segment.read_text().splitlines()[0])) == 11  # "e" and 10 arguments


def test_the_fingerprint_is_of_the_meaning_not_the_spelling() -> None:
    body = {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 480,
            "event_time": "2026-03-02T14:05:00Z", "channel": "online"}  # fmt: skip
    same = {"channel": "online", "event_time": "2026-03-02T15:05:00+01:00", "amount": 480.0,
            "merchant_id": "m1", "card_id": "c1", "transaction_id": "t1", "lat": None}  # fmt: skip
    assert fingerprint(ScoreRequest(**body)) == fingerprint(ScoreRequest(**same))
    for change in ({"amount": 480.01}, {"device_id": "d9"}, {"event_time": "2026-03-02T14:05:01Z"},
                   {"hour_of_day": 3}):  # fmt: skip
        assert fingerprint(ScoreRequest(**body | change)) != fingerprint(ScoreRequest(**body))


# -- the service ---------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    with client_for(tmp_path) as c:
        yield c


def _without(body: dict, *names: str) -> dict:
    return {k: v for k, v in body.items() if k not in names}


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_a_retry_gets_its_original_answer_even_when_a_new_score_would_differ(
    client: TestClient, tmp_path: Path
) -> None:
    first = client.post("/v1/score?explain=true", json=RAW).json()
    assert (first["state"], first["scored_by"]) == ("added", "model")
    client.app.state.service.settings.force_circuit_open = True  # type: ignore[attr-defined]
    fresh = client.post("/v1/score", json=RAW | {"transaction_id": "t-new"}).json()
    assert fresh["scored_by"] == "heuristic"  # a new score now comes from the heuristic
    respelled = {"amount": 20, "event_time": "2026-01-01T13:00:00+01:00"}  # the same values
    for body in (RAW, RAW | respelled):
        retry = client.post("/v1/score?explain=true", json=body).json()
        assert retry["state"] == "duplicate"
        assert _without(retry, "state", "features") == _without(first, "state", "features")
        # `features` explain the state as it is now: t-new, at the same time with a smaller
        # id, counts as before t1 (the stored answer is t1's, as it was first scored).
        assert retry["features"]["txn_count_10m"] == first["features"]["txn_count_10m"] + 1
    logged = (tmp_path / "scored").glob("scored-*.jsonl")
    lines = [line for f in logged for line in f.read_text().splitlines() if '"t1"' in line]
    assert len(lines) == 1  # a replayed answer is not logged (or counted) again
    assert _metric(client, "sentinel_idempotent_replays_total") == 2
    decided = sum(
        float(line.split()[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("sentinel_decisions_total{")
    )
    assert decided == 2  # t1 and t-new, each once


def test_a_retry_with_another_body_is_409_naming_the_transaction_id(client: TestClient) -> None:
    first = client.post("/v1/score?explain=true", json=RAW).json()
    changed = client.post("/v1/score", json=RAW | {"amount": 21.0})
    assert changed.status_code == 409
    (item,) = changed.json()["detail"]
    assert item["loc"] == ["body", "transaction_id"]
    assert item["type"] == "idempotency_conflict"
    assert item["msg"].startswith("transaction_id: 't1' was already scored with a different body")
    moved = client.post("/v1/score", json=RAW | {"event_time": "2026-01-01T12:00:30Z"})
    assert moved.status_code == 409 and "(event_time changed)" in moved.json()["detail"][0]["msg"]
    assert _metric(client, "sentinel_idempotency_conflicts_total") == 2
    # Nothing of the refused bodies reached the state: the card's next payment sees one.
    following = RAW | {"transaction_id": "t2", "event_time": "2026-01-01T12:01:00Z"}
    features = client.post("/v1/score?explain=true", json=following).json()["features"]
    assert features["txn_count_10m"] == 1
    assert features["amount_sum_24h"] == first["features"]["amount"] == 20.0
    # Without an event_time the service stamps the arrival: that is not the caller's change.
    unstamped = {k: v for k, v in RAW.items() if k != "event_time"} | {"transaction_id": "u1"}
    assert client.post("/v1/score", json=unstamped).status_code == 200
    again = client.post("/v1/score", json=unstamped | {"amount": 5.0})
    assert again.status_code == 409
    assert (
        "(a field other than card_id, merchant_id and event_time changed)"
        in (again.json()["detail"][0]["msg"])
    )


def test_a_batch_with_a_conflicting_event_is_409_and_stores_nothing(client: TestClient) -> None:
    client.post("/v1/score", json=RAW)
    other = RAW | {"transaction_id": "t9", "event_time": "2026-01-01T12:02:00Z"}
    refused = client.post("/v1/score/batch", json={"events": [other, RAW | {"amount": 1.0}]})
    assert refused.status_code == 409
    (item,) = refused.json()["detail"]
    assert item["loc"] == ["body", "events.1.transaction_id"]
    assert item["msg"].startswith("events.1.transaction_id: 't1' was already scored")
    assert client.post("/v1/score", json=other).json()["state"] == "added"  # t9 was not stored
    batch = {"events": [RAW | {"transaction_id": f"b{i}"} for i in range(3)]}
    answered = client.post("/v1/score/batch", json=batch).json()["results"]
    again = client.post("/v1/score/batch", json=batch).json()["results"]
    assert [a["state"] for a in again] == ["duplicate"] * 3
    assert [_without(a, "state") for a in again] == [_without(a, "state") for a in answered]


def test_the_answer_survives_a_restart(tmp_path: Path) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    with client_for(tmp_path) as c:
        first = c.post("/v1/score", json=RAW).json()
    with client_for(tmp_path, force_circuit_open=True) as c:
        retry = c.post("/v1/score", json=RAW).json()
        assert c.post("/v1/score", json=RAW | {"amount": 2.0}).status_code == 409
    assert (retry["state"], retry["scored_by"]) == ("duplicate", "model")
    assert _without(retry, "state") == _without(first, "state")


def test_events_without_a_card_are_scored_each_time(client: TestClient) -> None:
    """Nothing is stored for them, so there is nothing to replay or to conflict with."""
    body = {"transaction_id": "s1", "amount": 30.0}
    assert client.post("/v1/score", json=body).json()["state"] == "stateless"
    again = client.post("/v1/score", json=body | {"amount": 31.0})
    assert again.status_code == 200 and again.json()["state"] == "stateless"


def test_the_dedup_window_is_configurable(tmp_path: Path) -> None:
    for home in ("a", "b"):
        publish_small(Registry(tmp_path / home / "registry"), seed=1)
    later = RAW | {"transaction_id": "t2", "event_time": "2026-01-01T12:10:00Z"}
    changed = RAW | {"amount": 99.0}
    with client_for(tmp_path / "a", dedup_window_s=60) as c:
        c.post("/v1/score", json=RAW)
        c.post("/v1/score", json=later)  # 10 minutes on: t1 is forgotten after 5 + 1
        reused = c.post("/v1/score", json=changed)
        assert reused.status_code == 200 and reused.json()["state"] == "too_late"
    with client_for(tmp_path / "b") as c:  # the default: two days
        c.post("/v1/score", json=RAW)
        c.post("/v1/score", json=later)
        assert c.post("/v1/score", json=changed).status_code == 409


# -- the service on Redis: when queued answers are written ------------------------------------


def _stored(redis_url: str, prefix: str, txn_id: str) -> dict | None:
    kept = redis.Redis.from_url(redis_url).get(f"{prefix}a:{txn_id}")
    return None if kept is None else json.loads(kept)


def test_on_redis_the_service_stop_writes_the_answers_still_queued(
    tmp_path: Path, redis_url: str
) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    prefix = "stop:"  # an idle flush an hour away: only the stop can write it
    with client_for(tmp_path, redis_url=redis_url, redis_prefix=prefix,
                    redis_answer_delay_ms=3_600_000) as c:  # fmt: skip
        first = c.post("/v1/score", json=RAW).json()
        assert first["state"] == "added"
        assert _stored(redis_url, prefix, "t1") is None  # queued, not written yet
    assert _stored(redis_url, prefix, "t1") == _without(first, "state")


def test_on_redis_with_the_delay_0_the_answer_is_written_before_it_is_sent(
    tmp_path: Path, redis_url: str
) -> None:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    with client_for(tmp_path, redis_url=redis_url, redis_prefix="at-once:",
                    redis_answer_delay_ms=0) as c:  # fmt: skip
        first = c.post("/v1/score", json=RAW).json()
        assert _stored(redis_url, "at-once:", "t1") == _without(first, "state")


def test_on_redis_the_idle_flush_writes_once_the_oldest_answer_has_waited_the_delay(
    tmp_path: Path, redis_url: str
) -> None:
    """The engine's clock is injected (stopped): the service's own timer may fire any
    number of times, and writes nothing until the test moves the clock past the delay."""
    publish_small(Registry(tmp_path / "registry"), seed=1)
    now = [1_000.0]
    with client_for(tmp_path, redis_url=redis_url, redis_prefix="idle:",
                    redis_answer_delay_ms=5) as c:  # fmt: skip
        service = c.app.state.service  # type: ignore[attr-defined]
        service.engine.monotonic = lambda: now[0]
        first = c.post("/v1/score", json=RAW).json()
        later = RAW | {"transaction_id": "t2", "event_time": "2026-01-01T12:00:01Z"}
        c.post("/v1/score", json=later)  # carries t1's answer; queues its own
        assert _stored(redis_url, "idle:", "t1") == _without(first, "state")
        now[0] += 0.004  # t2's answer has waited 4 ms: not yet
        c.portal.call(service.scorer.flush_due_answers)  # type: ignore[union-attr]
        assert _stored(redis_url, "idle:", "t2") is None
        now[0] += 0.002  # 6 ms
        c.portal.call(service.scorer.flush_due_answers)  # type: ignore[union-attr]
        assert _stored(redis_url, "idle:", "t2") is not None
        assert service.engine.answers_due_in(0.0) is None


def test_on_redis_an_answer_redis_refuses_is_counted_and_its_carrier_still_answers(
    tmp_path: Path, redis_url: str, sentinel_logs: io.StringIO
) -> None:
    """Redis refuses the answers' `SET`s (the worker's user may not write them): the request
    whose pipeline carried them is answered, and they are counted and logged (no ids)."""
    publish_small(Registry(tmp_path / "registry"), seed=1)
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("no-answers-2", enabled=True, passwords=["+pw"], commands=["+@all"],
                      keys=["%R~*", "~refused-http:[^a]*"])  # fmt: skip
    # The payment itself is stored by another worker (this one may not delete `P.a`).
    request = ScoreRequest(**RAW)
    payment = event_args(request, event_timestamp(request, 0.0))
    assert payment is not None
    RedisFeatureEngine.from_url(redis_url, prefix="refused-http:").process_many(
        [payment], [fingerprint(request)]
    )
    url = redis_url.replace("redis://", "redis://no-answers-2:pw@")
    with client_for(tmp_path, redis_url=url, redis_prefix="refused-http:",
                    redis_answer_delay_ms=3_600_000) as c:  # fmt: skip
        first = c.post("/v1/score", json=RAW)  # a retry, scored again: its answer queued
        again = c.post("/v1/score", json=RAW)  # carries the refused `SET`
        assert (first.status_code, again.status_code) == (200, 200)
        assert first.json()["state"] == again.json()["state"] == "duplicate"
        assert _metric(c, "sentinel_answers_not_kept_total") == 1
    assert _stored(redis_url, "refused-http:", "t1") is None  # the stop's flush: refused too
    logged = [json.loads(line) for line in sentinel_logs.getvalue().splitlines()]
    refused = [e for e in logged if e["event"] == "answers_not_kept"]
    assert [(e["answers"], e["error"]) for e in refused] == [
        (1, "the Redis state store failed: NoPermissionError")
    ] * 2
    assert '"t1"' not in sentinel_logs.getvalue()
