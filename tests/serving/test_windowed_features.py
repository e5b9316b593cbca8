"""Every declared card and merchant window against a brute-force recomputation.

The test reads the declaration, so a feature added to `FEATURES` is checked here without a
new test. Streams are random: events arrive out of order (within the allowed lateness),
labels arrive late, early (stamped ahead of the clock) or not at all.
"""

import math
import random

import pytest

from serving.feature_engine import EngineConfig, FeatureEngine, FeatureSetError
from serving.features import (
    DAY,
    FEATURES,
    Aggregation,
    Entity,
    Feature,
    FeatureSet,
    Of,
)

T0 = 1_767_225_600.0  # 2026-01-01 UTC
WINDOWED = [f for f in FEATURES if f.windowed]


def _stream(seed: int, events: int = 1_500, days: int = 60) -> list[tuple]:
    """Arrivals in order: ("event", t, id, card, merchant, amount) and
    ("label", label_time, id, card, merchant, event_time)."""
    rng = random.Random(seed)
    arrivals = []
    grid = 600.0  # times on a 10-minute grid: many ties, with events and with labels
    for i in range(events):
        t = T0 + rng.randrange(int(days * DAY / grid)) * grid
        txn, card, merchant = f"t{i:05d}", f"c{rng.randrange(8)}", f"m{rng.randrange(4)}"
        amount = round(rng.uniform(1, 300), 2)
        arrived = t + rng.uniform(0, 200)  # late, within the allowed lateness
        arrivals.append((arrived, ("event", t, txn, card, merchant, amount)))
        if rng.random() < 0.12:  # a fraud
            # Reported at once (a tie with the payment) or after up to 20 days.
            label_time = t + rng.choice([0, rng.randrange(6, int(20 * DAY / grid))]) * grid
            # Most labels arrive at their label_time; some days late, some stamped ahead.
            arrive = label_time + rng.choice([0.0, 0.0, rng.uniform(0, 2 * DAY), -DAY / 2])
            label = ("label", label_time, txn, card, merchant, t)
            arrivals.append((max(arrive, arrived + 1e-3), label))
    return [item for _, item in sorted(arrivals, key=lambda a: a[0])]


def _brute_force(feature: Feature, maturity_s: float, t: float, txn: str,
                 history: list[tuple], frauds: list[tuple]) -> float:  # fmt: skip
    """The feature of the event (t, txn) from the entity's stored history and known frauds."""
    w = feature.window_s or 0.0
    if feature.lagged and maturity_s > 0:  # a lag of 0 is an ordinary window
        end = t - maturity_s
        payments = [h for h in history if end - w < h[0] <= end]
        known = [f for f in frauds if end - w < f[0] <= end and f[1] <= t]
    else:
        payments = [h for h in history if t - w < h[0] and (h[0], h[1]) < (t, txn)]
        known = [f for f in frauds if t - w < f[0] < t and f[1] <= t]
    amounts = [h[2] for h in payments]
    if feature.aggregation is Aggregation.COUNT:
        return float(len(known) if feature.of is Of.FRAUDS else len(amounts))
    if feature.aggregation is Aggregation.SUM:
        return sum(amounts)
    if feature.aggregation is Aggregation.MEAN:
        return sum(amounts) / len(amounts) if amounts else math.nan
    assert feature.aggregation is Aggregation.RATE
    return min(1.0, len(known) / len(amounts)) if amounts else math.nan


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize(("seed", "maturity_days"), [(1, 7.0), (2, 3.0), (3, 0.5), (4, 0.0)])
def test_every_declared_window_matches_brute_force(
    seed: int, maturity_days: float, compiled: bool
) -> None:
    features = FeatureSet(label_maturity_days=maturity_days)
    engine = FeatureEngine(config=EngineConfig(features=features, compiled=compiled))
    assert engine.kernels == ("compiled" if compiled else "python")
    index = {name: i for i, name in enumerate(features.names)}
    history: dict[str, list[tuple]] = {}  # entity key -> (t, id, amount) stored so far
    frauds: dict[str, list[tuple]] = {}  # entity key -> (event_time, label_time) applied
    checked = lagged_nonzero = 0
    for kind, t, txn, card, merchant, value in _stream(seed):
        keys = {Entity.CARD: f"card:{card}", Entity.MERCHANT: f"merchant:{merchant}"}
        if kind == "label":
            engine.apply_label(txn, True, t, card, merchant, value)
            for key in keys.values():
                frauds.setdefault(key, []).append((value, t))
            continue
        vector = engine.process(txn, t, card, merchant, value)
        for f in WINDOWED:
            key = keys[f.entity]
            expected = _brute_force(
                f, features.label_maturity_s, t, txn, history.get(key, []), frauds.get(key, [])
            )
            got = vector[index[f.name]]
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9, nan_ok=True), (f.name, txn)
            checked += 1
            lagged_nonzero += f.lagged and f.of is Of.FRAUDS and expected > 0
        for key in keys.values():
            history.setdefault(key, []).append((t, txn, value))
    assert engine.counters["too_late"] == 0  # every event was late only within the lateness
    assert checked > 20_000  # every declared window, on every event
    if maturity_days:
        assert lagged_nonzero > 500  # the lagged fraud windows were exercised


def test_a_new_window_is_one_declaration() -> None:
    fourteen = Feature(
        "merchant_fraud_rate_14d_lagged", Entity.MERCHANT, 14 * DAY, Aggregation.RATE,
        "known frauds / payments at the merchant, 14 days lagged", Of.FRAUDS, lagged=True,
    )  # fmt: skip
    engine = FeatureEngine(config=EngineConfig(features=FeatureSet((*FEATURES, fourteen))))
    for day in range(20):  # a payment a day at one merchant; the first one is a fraud
        engine.process(f"t{day:02d}", T0 + day * DAY, f"c{day}", "m", 10.0)
        if day == 0:
            engine.apply_label("t00", True, T0 + 3_600, "c0", "m", T0)
    vector = engine.process("t20", T0 + 20 * DAY, "c20", "m", 10.0)
    # Days 0..13 are 7..20 days back; (t-21d, t-7d] holds days 0..13: 14 payments, 1 fraud.
    assert vector[-1] == pytest.approx(1 / 14)


@pytest.mark.parametrize(
    ("feature", "reason"),
    [
        (Feature("km_7d", Entity.CARD, 7 * DAY, Aggregation.DISTANCE, "x", Of.LOCATION),
         "does not compute distance"),
        (Feature("m_sum", Entity.MERCHANT, DAY, Aggregation.SUM, "x", Of.AMOUNT),
         "merchant windows count"),
        (Feature("c_zero", Entity.CARD, 0.0, Aggregation.COUNT, "x"), "window > 0"),
        (Feature("c_nan", Entity.CARD, math.nan, Aggregation.COUNT, "x"), "window > 0"),
    ],
)  # fmt: skip
def test_a_feature_the_engine_cannot_compute_is_refused(feature: Feature, reason: str) -> None:
    with pytest.raises(FeatureSetError, match=reason):
        FeatureEngine(config=EngineConfig(features=FeatureSet((*FEATURES, feature))))


def test_a_lag_of_zero_never_counts_the_events_own_label() -> None:
    features = FeatureSet(label_maturity_days=0.0)
    engine = FeatureEngine(config=EngineConfig(features=features))
    engine.apply_label("t1", True, T0, "c", "m", T0)  # reported at the payment's own instant
    vector = engine.process("t1", T0, "c", "m", 10.0)
    index = {name: i for i, name in enumerate(features.names)}
    for name in ("card_fraud_count_30d_lagged", "merchant_fraud_count_1d_lagged"):
        assert vector[index[name]] == 0, name


def test_a_snapshot_restores_under_another_feature_set(tmp_path) -> None:
    engine = FeatureEngine()
    for day in range(10):
        engine.process(f"t{day}", T0 + day * DAY, "c", "m", 10.0)
    engine.snapshot(tmp_path / "state.pkl")
    same = FeatureEngine.restore(tmp_path / "state.pkl")
    assert same.config.features == FeatureSet()
    other = FeatureEngine.restore(tmp_path / "state.pkl", FeatureSet(label_maturity_days=3.0))
    assert other.config.features.label_maturity_days == 3.0
    index = other.feature_names.index("merchant_txn_count_7d_lagged")
    # Payments of days 1..7 lie in (t - 10 d, t - 3 d] for the payment of day 10.
    assert other.process("t10", T0 + 10 * DAY, "c2", "m", 5.0)[index] == 7
