"""Bounded online state: the in-memory store's caps, evictions counted by reason, and the
engine's guards on labels and on a restored clock."""

import io
import json
import math
from operator import attrgetter
from pathlib import Path

import pytest

from serving.feature_engine import FeatureEngine
from serving.features import FEATURE_NAMES
from serving.state_store import InMemoryStore

T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC
FAR_FUTURE = 253_402_300_799.0  # 9999-12-31T23:59:59Z


class Entity:
    def __init__(self, last_seen: float) -> None:
        self.last_seen = last_seen


AGE = attrgetter("last_seen")


def add(store: InMemoryStore, key: str, at: float) -> Entity:
    entity = Entity(at)
    store.add("card", key, entity, at)
    return entity


def test_a_capped_table_evicts_the_least_recently_used_key() -> None:
    store = InMemoryStore()
    store.cap("card", 3, AGE)
    a = add(store, "a", 1.0)
    add(store, "b", 2.0)
    add(store, "c", 3.0)
    a.last_seen = 4.0  # used again: a is now more recent than b and c
    add(store, "d", 5.0)
    assert set(store.table("card")) == {"a", "c", "d"}
    add(store, "e", 6.0)
    assert set(store.table("card")) == {"a", "d", "e"}
    assert store.evictions()["card"] == {"cap": 2, "idle": 0}
    assert store.limits() == {"card": 3}


def test_under_the_cap_adding_touches_nothing_but_the_new_key() -> None:
    store = InMemoryStore()
    store.cap("card", 10, AGE)
    for i in range(10):
        add(store, f"k{i}", float(i))
    assert store.size("card") == 10
    assert len(store._queues["card"]) == 10  # nothing popped or re-queued
    assert store.evictions()["card"] == {"cap": 0, "idle": 0}


def test_re_adding_a_present_key_at_the_cap_evicts_nothing() -> None:
    store = InMemoryStore()
    store.cap("card", 2, AGE)
    add(store, "a", 1.0)
    b = add(store, "b", 2.0)
    store.add("card", "b", b, 3.0)  # as apply_label does for a known card
    assert set(store.table("card")) == {"a", "b"}
    assert store.evictions()["card"]["cap"] == 0


def test_a_cap_set_on_a_full_table_applies_at_once_and_can_be_lifted() -> None:
    store = InMemoryStore()
    for i in range(5):
        add(store, f"k{i}", float(i))
    store.cap("card", 2, AGE)
    assert set(store.table("card")) == {"k3", "k4"}
    assert store.evictions()["card"]["cap"] == 3
    store.cap("card", None, AGE)
    for i in range(5, 9):
        add(store, f"k{i}", float(i))
    assert store.size("card") == 6
    assert store.limits() == {}
    with pytest.raises(ValueError, match="at least 1"):
        store.cap("card", 0, AGE)


def test_an_adder_made_before_the_cap_honours_it() -> None:
    store = InMemoryStore()
    remember = store.adder("txn")
    store.cap("txn", 2, lambda value: value[2])
    for i in range(4):
        remember(f"t{i}", ("card", "m", float(i)), float(i))
    assert set(store.table("txn")) == {"t2", "t3"}
    assert store.evictions()["txn"] == {"cap": 2, "idle": 0}


def test_the_key_being_added_is_never_the_one_evicted() -> None:
    store = InMemoryStore()
    store.cap("card", 2, AGE)
    a, b = add(store, "a", 1.0), add(store, "b", 2.0)
    a.last_seen, b.last_seen = 3.0, 4.0  # both used since queued: both get a second chance
    add(store, "c", 5.0)
    assert set(store.table("card")) == {"b", "c"}  # a, the older of the two, goes


def test_a_value_dated_in_the_future_is_still_evicted_in_time() -> None:
    store = InMemoryStore()
    store.cap("card", 1, AGE)
    poisoned = add(store, "poisoned", 1.0)
    poisoned.last_seen = FAR_FUTURE  # re-queued once at its age, then evicted
    add(store, "b", 2.0)
    assert set(store.table("card")) == {"b"}
    add(store, "c", 3.0)
    assert set(store.table("card")) == {"c"}


def test_idle_evictions_are_counted_separately() -> None:
    store = InMemoryStore()
    for i in range(4):
        add(store, f"k{i}", float(i))
    assert store.evict_idle("card", 2.0, AGE) == 2
    assert store.evictions()["card"] == {"cap": 0, "idle": 2}


# -- the engine ---------------------------------------------------------------------------


def event(txn: str, seconds: float, card: str, merchant: str = "m-1") -> dict:
    return {"transaction_id": txn, "event_time": T0 + seconds, "card_id": card,
            "merchant_id": merchant, "amount": 10.0}  # fmt: skip


def features(engine: FeatureEngine, *args, **kwargs) -> dict[str, float]:
    vector = engine.process_event(event(*args, **kwargs))
    return dict(zip(FEATURE_NAMES, vector, strict=True))


def test_an_evicted_card_starts_cold_and_the_state_is_reported() -> None:
    engine = FeatureEngine()
    engine.limit_state(max_cards=2, max_merchants=10)
    features(engine, "a1", 0, "a")
    features(engine, "b1", 60, "b")
    assert features(engine, "a2", 120, "a")["txn_count_1h"] == 1  # a is the recent one now
    features(engine, "c1", 180, "c")  # over the cap: b, the least recently used, goes
    stats = engine.state_stats()
    assert (stats["cards"], stats["merchants"], stats["txns"]) == (2, 1, 4)
    assert stats["limits"] == {"card": 2, "merchant": 10}
    assert stats["evicted"]["card"] == {"cap": 1, "idle": 0}
    assert stats["evicted"]["merchant"] == {"cap": 0, "idle": 0}
    back = features(engine, "b2", 240, "b")
    assert back["txn_count_1h"] == 0 and back["txn_count_24h"] == 0
    assert math.isnan(back["days_since_last_txn"])  # cold, like a card never seen
    assert features(engine, "a3", 300, "a")["txn_count_1h"] == 2  # a was kept
    assert engine.state_stats()["evicted"]["card"]["cap"] == 2  # c went for b


def test_an_uncapped_engine_is_unchanged() -> None:
    engine = FeatureEngine()
    for i in range(50):
        features(engine, f"t{i}", i, f"card-{i}")
    assert engine.state_stats()["cards"] == 50
    assert engine.state_stats()["limits"] == {}


def test_a_label_before_its_event_is_refused_before_anything_changes() -> None:
    engine = FeatureEngine()
    engine.process_event(event("t1", 0, "a"))
    before = (engine.stats(), engine.state_stats())
    with pytest.raises(ValueError, match=r"^label_time: .* before the event's event_time"):
        engine.apply_label("t1", True, T0 - 1)  # the event's time remembered for the id
    with pytest.raises(ValueError, match=r"^label_time: "):
        engine.apply_label("x", True, T0 - 1, "a", "m-1", event_time=T0)  # given
    with pytest.raises(ValueError, match=r"^label_time: "):
        engine.apply_label("t1", False, T0 - 1)  # not fraud: refused all the same
    assert (engine.stats(), engine.state_stats()) == before
    assert engine.apply_label("t1", True, T0) == "applied"  # at the event's time is fine
    assert engine.apply_label("never-seen", True, T0 - 10) == "unknown"  # nothing to check


def poisoned_snapshot(path: Path) -> Path:
    """A snapshot of an engine that absorbed a year-9999 timestamp (an older version)."""
    engine = FeatureEngine()
    engine.process_event(event("t1", 0, "a"))
    engine.process_event(event("bad", FAR_FUTURE - T0, "secret-card-4000"))
    assert engine.clock == FAR_FUTURE
    engine.snapshot(path)
    return path


def test_a_restored_clock_beyond_the_limit_is_clamped_with_a_warning(
    tmp_path: Path, sentinel_logs: io.StringIO
) -> None:
    path = poisoned_snapshot(tmp_path / "state.pkl")
    poisoned = FeatureEngine.restore(path)  # without a limit the poison is kept ...
    poisoned.process_event(event("t2", 60, "a"))
    assert poisoned.last_state == "too_late"  # ... and no event is ever added again

    engine = FeatureEngine.restore(path, max_clock=T0 + 600)
    assert engine.clock == T0 + 600
    assert features(engine, "t2", 360, "a")["txn_count_1h"] == 1  # t1 is still there
    assert engine.last_state == "added"
    assert features(engine, "t3", 420, "a")["txn_count_1h"] == 2
    (warning,) = [json.loads(line) for line in sentinel_logs.getvalue().splitlines()]
    assert warning["event"] == "feature_state_clock_clamped"
    assert warning["level"] == "warning"
    assert (warning["snapshot_clock"], warning["max_clock"]) == (FAR_FUTURE, T0 + 600)
    assert "secret-card" not in sentinel_logs.getvalue()


def test_a_sane_restored_clock_is_left_alone(tmp_path: Path, sentinel_logs: io.StringIO) -> None:
    engine = FeatureEngine()
    engine.process_event(event("t1", 0, "a"))
    engine.snapshot(tmp_path / "state.pkl")
    restored = FeatureEngine.restore(tmp_path / "state.pkl", max_clock=T0 + 300)
    assert restored.clock == T0
    assert sentinel_logs.getvalue() == ""
