"""The online feature engine on hand-made event sequences with known answers."""

import math
from pathlib import Path

import pytest

from serving.feature_engine import EngineConfig, FeatureEngine
from serving.features import (
    FEATURE_NAMES,
    FEATURES,
    MERCHANT_CATEGORIES,
    SEED_FEATURES,
    markdown_table,
)
from serving.state_store import InMemoryStore

T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC, a Thursday
NYC = (40.7128, -74.0060)
LA = (34.0522, -118.2437)


def event(txn: str, seconds: float, **fields) -> dict:
    base = {
        "transaction_id": txn,
        "event_time": T0 + seconds,
        "card_id": "card-1",
        "merchant_id": "m-1",
        "amount": 10.0,
    }
    return base | fields


def features(engine: FeatureEngine, txn: str, seconds: float, **fields) -> dict[str, float]:
    return dict(
        zip(FEATURE_NAMES, engine.process_event(event(txn, seconds, **fields)), strict=True)
    )


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)


@pytest.fixture
def engine() -> FeatureEngine:
    return FeatureEngine()


def test_definitions_are_complete_and_keep_the_seed_names() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert set(SEED_FEATURES) <= set(FEATURE_NAMES)
    assert all(f.meaning and f.aggregation for f in FEATURES)


def test_first_event_of_a_card_is_a_documented_cold_start(engine: FeatureEngine) -> None:
    f = features(engine, "a", 0, amount=42.0, channel="online", device_id="phone", lat=1.0, lon=2.0)
    assert f["amount"] == 42.0
    assert f["hour_of_day"] == 12
    assert f["day_of_week"] == 3  # Thursday
    assert f["channel_online"] == 1.0
    for name in ("txn_count_10m", "txn_count_1h", "txn_count_24h", "amount_sum_1h"):
        assert f[name] == 0, name
    assert f["distinct_merchants_24h"] == 0
    for name in (
        "days_since_last_txn", "avg_amount_7d", "avg_amount_30d", "amount_to_avg_30d",
        "km_from_last_txn", "speed_kmh_from_last_txn", "merchant_fraud_rate_30d",
    ):  # fmt: skip
        assert math.isnan(f[name]), name
    assert f["device_seen_before_30d"] == 0.0
    assert f["card_has_reported_fraud"] == 0.0


def test_missing_optional_fields_are_nan_not_guesses(engine: FeatureEngine) -> None:
    f = features(engine, "a", 0)
    assert math.isnan(f["channel_online"])
    assert math.isnan(f["merchant_category_code"])
    assert math.isnan(f["device_seen_before_30d"])


def test_merchant_category_is_encoded_with_a_code_for_unknowns(engine: FeatureEngine) -> None:
    assert features(engine, "a", 0, merchant_category="grocery")["merchant_category_code"] == 0
    other = features(engine, "b", 1, merchant_category="llama_rental")["merchant_category_code"]
    assert other == len(MERCHANT_CATEGORIES)


@pytest.mark.parametrize(
    ("name", "window_s"), [("txn_count_10m", 600), ("txn_count_1h", 3600), ("txn_count_24h", 86400)]
)
def test_window_edges_an_event_exactly_one_window_ago_is_out(name: str, window_s: float) -> None:
    inside, outside = FeatureEngine(), FeatureEngine()
    features(inside, "a", 0)
    features(outside, "a", 0)
    assert features(inside, "b", window_s - 1)[name] == 1
    assert features(outside, "b", window_s)[name] == 0


def test_sums_averages_and_ratio(engine: FeatureEngine) -> None:
    features(engine, "a", 0, amount=10.0)
    features(engine, "b", 600, amount=30.0)
    f = features(engine, "c", 7200, amount=100.0)
    assert f["amount_sum_1h"] == 0.0
    assert f["amount_sum_24h"] == 40.0
    assert f["avg_amount_7d"] == 20.0
    assert f["avg_amount_30d"] == 20.0
    assert f["amount_to_avg_30d"] == 5.0
    assert f["days_since_last_txn"] == pytest.approx(6600 / 86400)
    later = features(engine, "d", 8 * 86400, amount=1.0)
    assert math.isnan(later["avg_amount_7d"])  # nothing in the last 7 days
    assert later["avg_amount_30d"] == pytest.approx(140.0 / 3)


def test_distinct_merchants_and_devices(engine: FeatureEngine) -> None:
    features(engine, "a", 0, merchant_id="m-1", device_id="d-1")
    features(engine, "b", 10, merchant_id="m-2", device_id="d-1")
    features(engine, "c", 20, merchant_id="m-2", device_id="d-2")
    f = features(engine, "d", 30, merchant_id="m-3", device_id="d-9")
    assert f["distinct_merchants_24h"] == 2
    assert f["distinct_devices_24h"] == 2
    assert f["device_seen_before_30d"] == 0.0
    assert features(engine, "e", 40, device_id="d-1")["device_seen_before_30d"] == 1.0
    assert features(engine, "f", 31 * 86400, device_id="d-1")["device_seen_before_30d"] == 0.0


def test_travel_between_far_cities_gives_an_impossible_speed(engine: FeatureEngine) -> None:
    features(engine, "a", 0, lat=NYC[0], lon=NYC[1])
    f = features(engine, "b", 1800, lat=LA[0], lon=LA[1])
    assert f["km_from_last_txn"] == pytest.approx(3936, rel=0.01)
    assert f["speed_kmh_from_last_txn"] == pytest.approx(f["km_from_last_txn"] * 2)
    # An unlocated payment in between does not hide the last known place.
    features(engine, "c", 1900)
    g = features(engine, "d", 3600 * 5, lat=NYC[0], lon=NYC[1])
    assert g["km_from_last_txn"] == pytest.approx(f["km_from_last_txn"])
    # Same place, same second: a speed, not a division by zero.
    h = features(engine, "e", 3600 * 5, lat=NYC[0], lon=NYC[1])
    assert h["speed_kmh_from_last_txn"] == 0.0


def test_distance_matches_a_known_one(engine: FeatureEngine) -> None:
    features(engine, "a", 0, lat=51.5074, lon=-0.1278)  # London
    paris = features(engine, "b", 3 * 3600, lat=48.8566, lon=2.3522)
    assert paris["km_from_last_txn"] == pytest.approx(343.5, rel=0.01)
    assert paris["speed_kmh_from_last_txn"] == pytest.approx(343.5 / 3, rel=0.01)


def test_merchant_features_count_other_cards(engine: FeatureEngine) -> None:
    features(engine, "a", 0, card_id="c-1")
    features(engine, "b", 60, card_id="c-2")
    features(engine, "c", 120, card_id="c-2")
    f = features(engine, "d", 180, card_id="c-3")
    assert f["merchant_txn_count_1h"] == 3
    assert f["merchant_distinct_cards_1h"] == 2
    assert f["txn_count_1h"] == 0  # c-3's own history is empty


def test_ties_are_ordered_by_transaction_id(engine: FeatureEngine) -> None:
    features(engine, "a", 0)
    assert features(engine, "b", 0)["txn_count_10m"] == 1  # a < b: a is history
    late = FeatureEngine()
    features(late, "b", 0)
    assert features(late, "a", 0)["txn_count_10m"] == 0  # b is not before a
    assert features(late, "c", 1)["txn_count_10m"] == 2


def test_label_one_second_before_an_event_counts_one_second_after_does_not() -> None:
    engine = FeatureEngine()
    features(engine, "fraud", 0, card_id="victim", merchant_id="shop")
    engine.apply_label("fraud", True, T0 + 100, card_id="victim", merchant_id="shop", event_time=T0)
    before = features(engine, "x", 99, card_id="victim", merchant_id="shop")
    at = features(engine, "y", 100, card_id="victim", merchant_id="shop")
    after = features(engine, "z", 101, card_id="victim", merchant_id="shop")
    assert (before["merchant_fraud_count_7d"], before["card_has_reported_fraud"]) == (0, 0.0)
    assert (at["merchant_fraud_count_7d"], at["card_has_reported_fraud"]) == (1, 1.0)
    assert (after["merchant_fraud_count_7d"], after["card_has_reported_fraud"]) == (1, 1.0)
    # Rate over the merchant's payments of the last 30 days: fraud, x, y before z.
    assert after["merchant_fraud_rate_30d"] == pytest.approx(1 / 3)
    week_later = features(engine, "w", 7 * 86400 + 1, card_id="other", merchant_id="shop")
    assert week_later["merchant_fraud_count_7d"] == 0
    assert week_later["card_has_reported_fraud"] == 0.0


def test_label_with_only_an_id_is_attributed_through_recent_transactions() -> None:
    engine = FeatureEngine()
    features(engine, "t1", 0, card_id="victim", merchant_id="shop")
    assert engine.apply_label("t1", True, T0 + 10) == "applied"
    assert engine.apply_label("t1", True, T0 + 20) == "duplicate"
    assert engine.apply_label("never-seen", True, T0 + 20) == "unknown"
    assert engine.apply_label("t1", False, T0 + 20) == "not_fraud"
    f = features(engine, "t2", 30, card_id="victim", merchant_id="shop")
    assert f["merchant_fraud_count_7d"] == 1  # the duplicate did not count twice
    assert f["card_has_reported_fraud"] == 1.0
    assert engine.stats()["labels_unknown"] == 1


def test_a_retried_transaction_does_not_change_state_again(engine: FeatureEngine) -> None:
    features(engine, "a", 0, amount=10.0)
    first = engine.process_event(event("b", 60, amount=20.0))
    again = engine.process_event(event("b", 60, amount=20.0))
    assert all(same(x, y) for x, y in zip(first, again, strict=True))
    f = features(engine, "c", 120)
    assert f["txn_count_10m"] == 2
    assert f["amount_sum_1h"] == 30.0
    assert engine.stats()["duplicates"] == 1


def test_late_event_within_lateness_is_inserted_in_time_order() -> None:
    engine = FeatureEngine(config=EngineConfig(allowed_lateness_s=300))
    features(engine, "a", 0, amount=10.0)
    features(engine, "c", 200, amount=30.0)
    late = features(engine, "b", 100, amount=20.0)  # arrives after c, 100 s late
    assert late["txn_count_10m"] == 1  # only a is before it
    assert late["amount_sum_1h"] == 10.0
    f = features(engine, "d", 250, amount=1.0)
    assert f["txn_count_10m"] == 3
    assert f["amount_sum_1h"] == 60.0
    assert engine.stats()["too_late"] == 0


def test_event_later_than_allowed_lateness_is_scored_but_not_stored() -> None:
    engine = FeatureEngine(config=EngineConfig(allowed_lateness_s=60))
    features(engine, "a", 0)
    features(engine, "c", 600)
    too_late = features(engine, "b", 100)
    assert too_late["txn_count_10m"] == 1  # it still sees a
    assert engine.stats()["too_late"] == 1
    assert features(engine, "d", 620)["txn_count_1h"] == 2  # a and c, not b


def test_memory_stops_growing_on_a_long_stream_of_one_card() -> None:
    engine = FeatureEngine()
    sizes = []
    for i in range(120 * 24):  # one payment an hour for 120 days
        engine.process(f"t{i:06d}", T0 + i * 3600.0, "card-1", "m-1", 5.0)
        if i % (10 * 24) == 0:
            card = engine.store.table("card")["card-1"]
            sizes.append((len(card.ts), len(engine.store.table("txn"))))
    history = [s[0] for s in sizes]
    # The longest reach is 37 days (a 30-day window lagged by 7 days of label maturity).
    reach_h = int(engine.config.features.longest_reach_s() // 3600)
    assert reach_h == 37 * 24
    assert max(history) <= reach_h + 24 + 2  # the reach, lateness, a day of trimming slack
    full = history[5:]  # samples from day 50 on: the reach is full
    assert all(reach_h <= n <= reach_h + 24 + 2 for n in full), full  # bounded, not growing
    assert max(s[1] for s in sizes) <= 2 * 24 + 2 + 1024  # ids kept for the dedup window


def test_idle_entities_are_dropped() -> None:
    engine = FeatureEngine()
    for i in range(3_000):
        engine.process(f"t{i:05d}", T0 + i, f"card-{i}", f"m-{i % 50}", 5.0)
    assert len(engine.store.table("card")) == 3_000
    for i in range(2_048):  # 40 days later, one busy card
        engine.process(f"u{i:05d}", T0 + 40 * 86400 + i, "busy", "m-0", 5.0)
    assert len(engine.store.table("card")) <= 2
    assert len(engine.store.table("merchant")) <= 2


def test_expired_state_is_ignored_even_before_eviction_runs() -> None:
    engine = FeatureEngine()
    features(engine, "a", 0)
    f = features(engine, "b", 31 * 86400 + 600)
    assert math.isnan(f["days_since_last_txn"])
    assert f["txn_count_24h"] == 0


def test_snapshot_and_restore_give_identical_subsequent_features(tmp_path: Path) -> None:
    engine = FeatureEngine()
    stream = [
        event(f"t{i:04d}", i * 97.0, card_id=f"c{i % 7}", merchant_id=f"m{i % 5}",
              amount=float(i % 13), device_id=f"d{i % 3}", lat=40 + i % 4, lon=-74.0)
        for i in range(400)
    ]  # fmt: skip
    for e in stream[:200]:
        engine.process_event(e)
    engine.apply_label("t0003", True, T0 + 200 * 97.0)
    engine.snapshot(tmp_path / "state.pkl")
    restored = FeatureEngine.restore(tmp_path / "state.pkl")
    assert restored.stats() == engine.stats()
    for e in stream[200:]:
        a, b = engine.process_event(e), restored.process_event(e)
        assert all(same(x, y) for x, y in zip(a, b, strict=True)), e["transaction_id"]


def test_restore_rejects_a_file_that_is_not_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="feature-state snapshot"):
        FeatureEngine.restore(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"transaction_id": None}, "transaction_id"),
        ({"card_id": ""}, "card_id"),
        ({"merchant_id": 5}, "merchant_id"),
        ({"amount": -1.0}, "amount"),
        ({"amount": float("nan")}, "amount"),
        ({"amount": "12"}, "amount"),
        ({"event_time": "yesterday"}, "event_time"),
        ({"event_time": None}, "event_time"),
        ({"lat": 123.0}, "lat"),
        ({"channel": "fax"}, "channel"),
    ],
)
def test_bad_input_raises_value_error_naming_the_field(change: dict, field: str) -> None:
    engine = FeatureEngine()
    with pytest.raises(ValueError, match=rf"^{field}:"):
        engine.process_event(event("a", 0) | change)
    assert engine.stats()["events"] == 0  # nothing was recorded


def test_missing_required_field_is_named() -> None:
    bad = event("a", 0)
    del bad["merchant_id"]
    with pytest.raises(ValueError, match=r"^merchant_id:"):
        FeatureEngine().process_event(bad)


def test_iso_timestamps_and_epoch_seconds_are_the_same_instant() -> None:
    a, b = FeatureEngine(), FeatureEngine()
    va = a.process_event(event("x", 0) | {"event_time": "2026-01-01T12:00:00Z"})
    vb = b.process_event(event("x", 0))
    assert all(same(x, y) for x, y in zip(va, vb, strict=True))


def test_in_memory_store_reports_sizes() -> None:
    store = InMemoryStore()
    engine = FeatureEngine(store=store)
    features(engine, "a", 0)
    assert store.size("card") == 1
    assert store.size("txn") == 1


def test_docs_hold_the_table_generated_from_the_declaration() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text()
    assert markdown_table() in doc
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "`" in line]
    assert [row.split("`")[1] for row in rows] == list(FEATURE_NAMES)


def test_merchant_distinct_cards_match_brute_force_with_late_events() -> None:
    import random

    rng = random.Random(3)
    engine = FeatureEngine(config=EngineConfig(allowed_lateness_s=600))
    events = [(T0 + i * 20.0 + rng.uniform(0, 5), f"t{i:05d}", f"c{rng.randrange(40)}")
              for i in range(3_000)]  # fmt: skip
    arrival = list(events)
    for i in range(0, len(arrival) - 5, 7):  # some events arrive a few positions late
        arrival[i], arrival[i + 5] = arrival[i + 5], arrival[i]
    seen: list[tuple[float, str, str]] = []
    for t, txn, card in arrival:
        f = dict(zip(FEATURE_NAMES, engine.process(txn, t, card, "shop", 1.0), strict=True))
        expected = {c for (ts, tid, c) in seen if (ts, tid) < (t, txn) and ts > t - 3600}
        assert f["merchant_distinct_cards_1h"] == len(expected), txn
        assert f["merchant_txn_count_1h"] == sum(
            1 for (ts, tid, _) in seen if (ts, tid) < (t, txn) and ts > t - 3600
        )
        seen.append((t, txn, card))
