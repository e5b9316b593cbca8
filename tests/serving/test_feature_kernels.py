"""The compiled feature kernels against the Python engine they replace: identical, bit for bit.

The Python engine (`EngineConfig(compiled=False)`) is the reference. Both run the same random
streams: events in and out of order (within and beyond the allowed lateness), ties, jumps
that expire and trim state, retries with the same and another body, labels early, late,
before their event and for unknown ids, busy merchants, cards with one event, missing
optional fields, ints where floats are usual, caps, and feature sets drawn at random. Every
answer (each value's type and bits, the event's state, a stored answer, an error's message)
and the whole state at the end must be the same.
"""

import gc
import math
import pickle
import random
import struct
import weakref
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving import feature_engine as fe
from serving.feature_engine import (
    BUILTIN,
    CARD_FIELDS,
    MERCHANT_FIELDS,
    CardState,
    EngineConfig,
    FeatureEngine,
    KnownFrauds,
    MerchantState,
)
from serving.features import DAY, FEATURES, Aggregation, Entity, Feature, FeatureSet, Of
from serving.state_store import InMemoryStore

kernels = fe._kernels  # None if not built: then every test below fails, none is skipped
T0 = 1_767_225_600.0  # 2026-01-01 UTC


def test_the_kernels_are_built() -> None:
    """`make setup` builds them (setup.py); CI fails here if it did not."""
    assert fe.KERNELS_BUILT and kernels is not None
    assert FeatureEngine().kernels == "compiled"
    assert FeatureEngine(config=EngineConfig(compiled=False)).kernels == "python"


def test_the_kernels_share_the_engines_constants() -> None:
    assert kernels.EARTH_RADIUS_KM == fe.EARTH_RADIUS_KM
    assert kernels.MIN_TRAVEL_HOURS == fe.MIN_TRAVEL_HOURS
    # The kernels hold the built-ins as 14 doubles; these three are returned as ints.
    names = list(BUILTIN)
    assert len(names) == 14 and names[0] == "amount"
    assert [names[i] for i in (5, 11, 12)] == [
        "distinct_merchants_24h", "distinct_devices_24h", "merchant_distinct_cards_1h",
    ]  # fmt: skip
    assert (
        fe._KIND[Aggregation.COUNT, Of.PAYMENTS] == 0 and fe._KIND[Aggregation.RATE, Of.FRAUDS] == 4
    )


# -- comparing -----------------------------------------------------------------------------


def exact(value: Any) -> Any:
    """A value as comparable data: floats by their bits (-0.0; NaN, and which NaN object),
    types kept."""
    if isinstance(value, float):
        # The Python code's NaNs it wrote as a constant are all `math.nan` (lists of them
        # compare equal); a NaN arithmetic made is its own object with its own bits.
        return (type(value).__name__, value.hex(), struct.pack("<d", value), value is math.nan)
    if isinstance(value, bool | int | str | bytes) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, list | tuple):
        return tuple(exact(v) for v in value)
    raise TypeError(type(value))


def number(value: Any) -> Any:
    """State as comparable data: numbers by value (a C field holds an int as a double)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("number", float(value).hex())
    if isinstance(value, array):
        return tuple(number(v) for v in value)
    if isinstance(value, list | tuple):
        return tuple(number(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, number(v)) for k, v in value.items()))
    if isinstance(value, KnownFrauds):
        return ("frauds", number(value.ts), number(value.label_ts), number(value.latest_label))
    if hasattr(value, "cum"):
        return ("card", *(number(getattr(value, name)) for name in CARD_FIELDS))
    if hasattr(value, "window_start"):
        return ("merchant", *(number(getattr(value, name)) for name in MERCHANT_FIELDS))
    return value


def state(engine: FeatureEngine) -> Any:
    store = engine.store
    assert isinstance(store, InMemoryStore)
    names = ("card", "merchant", "txn", "label", "answer")
    tables = {name: number(store.table(name)) for name in names}
    queues = {name: number(list(store._queues[name])) for name in tables}
    return number(engine.clock), engine._events, engine.counters, tables, queues


def call(engine: FeatureEngine, op: tuple) -> Any:
    """What one operation answered, as comparable data."""
    kind, args = op[0], op[1:]
    try:
        if kind == "event":
            *event, fingerprint = args
            vector = engine.process(*event, fingerprint=fingerprint)
            answer = engine.last_answer
            return exact(vector), engine.last_state, answer
        if kind == "label":
            return engine.apply_label(*args)
        if kind == "answers":
            engine.remember_answers(*args)
            return None
        if kind == "many":
            return [(exact(p.vector), p.state, p.answer) for p in engine.process_many(*args)]
    except ValueError as exc:  # ConflictingEvent, RefusedEvent, label before its event
        return type(exc).__name__, str(exc), getattr(exc, "index", None)
    raise AssertionError(kind)


# -- random streams ------------------------------------------------------------------------


def stream(seed: int, n: int = 3_000) -> list[tuple]:
    rng = random.Random(seed)
    ops: list[tuple] = []
    sent: list[tuple] = []  # the events sent, for retries and labels
    t = T0
    for i in range(n):
        r = rng.random()
        if r < 0.06 and sent:  # a retry (mostly of a recent event): the same body, or another
            event = list(rng.choice(sent[-50:] if rng.random() < 0.8 else sent))
            if rng.random() < 0.4:
                event[3] = f"m{rng.randrange(40)}"
                event[-1] = f"fp{rng.random()}"
            ops.append(("event", *event))
            continue
        if r < 0.14 and sent:  # a label
            e = rng.choice(sent)
            label_time = e[1] + rng.choice([0.0, 3600.0, 5 * DAY, -60.0, 20 * DAY])
            if rng.random() < 0.5:  # attributed through the remembered id
                ops.append(("label", e[0], rng.random() < 0.85, label_time))
            else:
                ops.append(("label", e[0], rng.random() < 0.85, label_time, e[2], e[3], e[1]))
            continue
        if r < 0.16:
            ops.append(("label", f"unknown{i}", True, t))
            continue
        if r < 0.18 and sent:
            picked = rng.sample(sent[-20:], min(3, len(sent)))
            ops.append(("answers", [(e[0], e[-1], f'{{"n":{i}}}'.encode()) for e in picked]))
            continue
        step = rng.random()
        if step < 0.02:
            t += rng.choice([8 * DAY, 40 * DAY])  # state expires, windows empty, arrays trim
        elif step < 0.10:
            pass  # a tie with the previous event
        else:
            t += rng.uniform(0, 900)
        late = rng.random()  # mostly in order; some late within the lateness, some beyond
        at = t - (0.0 if late < 0.7 else rng.uniform(0, 290) if late < 0.95 else 3600.0)
        if rng.random() < 0.05:
            at = float(int(at))
        if rng.random() < 0.03:
            at = int(at)  # an int where a float is usual: the vector keeps what Python makes
        busy = rng.random() < 0.3
        card = f"one{i}" if rng.random() < 0.05 else f"c{rng.randrange(60)}"
        merchant = "busy" if busy else f"m{rng.randrange(40)}"
        amount: float = round(rng.uniform(0, 500), 2)
        if rng.random() < 0.05:
            amount = rng.choice([0, 7, 0.0, 1e-9])
        located = rng.random() < 0.8
        event = (
            f"t{i:05d}", at, card, merchant, amount,
            rng.choice([None, "online", "pos", "atm"]),
            rng.choice([None, "d1", "d2", f"d{rng.randrange(200)}"]),
            rng.uniform(-89, 89) if located else math.nan,
            rng.uniform(-179, 179) if located and rng.random() < 0.95 else math.nan,
            rng.choice([None, "grocery", "travel", "unheard-of"]),
            "" if rng.random() < 0.3 else f"fp{i}",
        )  # fmt: skip
        sent.append(event)
        ops.append(("event", *event))
        if rng.random() < 0.02 and len(sent) > 3:  # a batch, its events seeing each other
            batch = [tuple(e[:-1]) for e in rng.sample(sent, 3)]
            ops.append(("many", batch, [f"fp{rng.randrange(3)}" for _ in batch]))
    return ops


def random_feature_set(seed: int) -> FeatureSet:
    """Any built-ins in any order, and card and merchant windows of any width and lag."""
    rng = random.Random(seed)
    builtins = rng.sample(list(BUILTIN.values()), rng.randrange(1, len(BUILTIN) + 1))
    kinds = [
        (Aggregation.COUNT, Of.PAYMENTS), (Aggregation.COUNT, Of.FRAUDS),
        (Aggregation.SUM, Of.AMOUNT), (Aggregation.MEAN, Of.AMOUNT), (Aggregation.RATE, Of.FRAUDS),
    ]  # fmt: skip
    windows = []
    for k in range(rng.randrange(1, 30)):
        entity = rng.choice([Entity.CARD, Entity.MERCHANT])
        aggregation, of = rng.choice(kinds)
        if entity is Entity.MERCHANT and aggregation in (Aggregation.SUM, Aggregation.MEAN):
            aggregation, of = Aggregation.COUNT, Of.PAYMENTS
        width = rng.choice([600.0, 3600.0, DAY, 7 * DAY, 30 * DAY, rng.uniform(60, 40 * DAY)])
        windows.append(
            Feature(f"w{k}", entity, width, aggregation, "random", of, rng.random() < 0.4)
        )
    features = builtins + windows
    rng.shuffle(features)
    return FeatureSet(tuple(features), label_maturity_days=rng.choice([0.0, 0.5, 7.0]))


def run_both(ops: list[tuple], config: EngineConfig, cap: int | None = None) -> None:
    compiled = FeatureEngine(config=config)
    python = FeatureEngine(config=replace(config, compiled=False))
    assert (compiled.kernels, python.kernels) == ("compiled", "python")
    if cap is not None:
        for engine in (compiled, python):
            engine.limit_state(max_cards=cap, max_merchants=cap)
    for i, op in enumerate(ops):
        assert call(compiled, op) == call(python, op), (i, op)
    assert state(compiled) == state(python)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_streams_give_identical_vectors_answers_and_state(seed: int) -> None:
    ops = stream(seed)
    run_both(ops, EngineConfig())
    kinds = {op[0] for op in ops}
    assert kinds == {"event", "label", "answers", "many"}


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_random_feature_sets_are_computed_identically(seed: int) -> None:
    run_both(stream(seed, n=1_500), EngineConfig(features=random_feature_set(seed)))


def test_capped_state_is_evicted_identically() -> None:
    run_both(stream(21, n=2_000), EngineConfig(), cap=25)


def test_the_streams_reach_the_rare_paths() -> None:
    """The comparison means something only if the streams exercise what is rare."""
    engine = FeatureEngine()
    results = [call(engine, op) for op in stream(1)]
    results = [r for r in results if isinstance(r, tuple)]
    counters = engine.counters
    assert counters["too_late"] > 20 and counters["duplicates"] > 50
    assert counters["labels_applied"] > 50 and counters["labels_unknown"] > 10
    assert sum(engine.state_stats()["evicted"]["card"].values()) > 0
    replayed = [r for r in results if len(r) == 3 and r[1] == "duplicate" and r[2] is not None]
    conflicts = [r for r in results if r and r[0] == "ConflictingEvent"]
    assert len(replayed) >= 3 and len(conflicts) > 10


def test_the_replay_is_identical(tmp_path: Path) -> None:
    from sentinel_dagster.features.feature_replay import replay
    from sentinel_dagster.simulation.simulation_params import SimulationParams
    from sentinel_dagster.simulation.simulator import simulate_events

    frame = simulate_events(SimulationParams(cards=300, days=20, seed=5)).to_pandas()
    compiled = replay(frame, EngineConfig())
    python = replay(frame, EngineConfig(compiled=False))
    assert (compiled.engine.kernels, python.engine.kernels) == ("compiled", "python")
    names = list(compiled.engine.feature_names)
    a, b = compiled.table[names].to_numpy(), python.table[names].to_numpy()
    assert a.dtype == b.dtype == np.float64
    assert np.array_equal(a.view("u8"), b.view("u8"))
    assert compiled.table.drop(columns=names).equals(python.table.drop(columns=names))
    assert state(compiled.engine) == state(python.engine)


@pytest.mark.parametrize("writer", [True, False], ids=["from-compiled", "from-python"])
def test_a_snapshot_continues_the_same_in_either_engine(tmp_path: Path, writer: bool) -> None:
    ops = stream(31, n=2_000)
    first, rest = ops[:1_000], ops[1_000:]
    engine = FeatureEngine(config=EngineConfig(compiled=writer))
    for op in first:
        call(engine, op)
    engine.snapshot(tmp_path / "state.pkl")
    answers = {}
    for compiled in (True, False):
        restored = FeatureEngine.restore(tmp_path / "state.pkl", compiled=compiled)
        assert restored.kernels == ("compiled" if compiled else "python")
        assert state(restored) == state(engine)
        answers[compiled] = [call(restored, op) for op in rest]
    assert answers[True] == answers[False]


def test_state_of_the_python_classes_is_taken_over_by_the_compiled_engine() -> None:
    """A snapshot of an earlier version pickled the Python classes themselves."""
    store = InMemoryStore()
    card, merchant = CardState(), MerchantState()
    for at in (T0, T0 + 60):
        card.ts.append(at)
        card.ids.append(f"x{at}")
        card.cum.append(card.cum[-1] + 10.0)
        card.merchants.append("m")
        card.devices.append(None)
        card.lat.append(math.nan)
        card.lon.append(math.nan)
        merchant.ts.append(at)
        merchant.ids.append(f"x{at}")
        merchant.cards.append("c")
    card.last_seen = merchant.last_seen = T0 + 60
    merchant.window_cards = None
    old = pickle.loads(pickle.dumps((card, merchant)))
    store.add("card", "c", old[0], T0 + 60)
    store.add("merchant", "m", old[1], T0 + 60)
    engine = FeatureEngine(store=store)
    assert type(store.table("card")["c"]) is kernels.CardState
    assert type(store.table("merchant")["m"]) is kernels.MerchantState
    vector = engine.process("y", T0 + 120, "c", "m", 5.0)
    reference = FeatureEngine(config=EngineConfig(compiled=False))
    reference.store.add("card", "c", pickle.loads(pickle.dumps(card)), T0 + 60)
    reference.store.add("merchant", "m", pickle.loads(pickle.dumps(merchant)), T0 + 60)
    assert exact(vector) == exact(reference.process("y", T0 + 120, "c", "m", 5.0))
    assert vector[FeatureSet().names.index("txn_count_1h")] == 2


def test_a_state_array_of_another_type_is_refused_not_misread() -> None:
    engine = FeatureEngine()
    engine.process("a", T0, "c", "m", 1.0)
    engine.store.table("card")["c"].ts = array("f", [T0])
    with pytest.raises(TypeError, match="typecode 'd'"):
        engine.process("b", T0 + 1, "c", "m", 1.0)


def test_features_match_the_declaration_order() -> None:
    engine = FeatureEngine()
    assert engine.compiled_process.plan.size == len(FEATURES)


def test_more_windows_than_a_fixed_buffer_holds_are_computed_identically() -> None:
    windows = tuple(
        Feature(f"w{entity}{k}", entity, 600.0 * (k + 1), Aggregation.COUNT, "many", Of.PAYMENTS)
        for entity in (Entity.CARD, Entity.MERCHANT)
        for k in range(90)
    ) + tuple(
        Feature(f"f{k}", Entity.MERCHANT, DAY * (k + 1), Aggregation.RATE, "many", Of.FRAUDS, True)
        for k in range(70)
    )
    run_both(stream(41, n=600), EngineConfig(features=FeatureSet(FEATURES + windows)))


def test_a_nan_made_by_arithmetic_keeps_its_own_bits() -> None:
    """Amounts near the float limit: a window's sum is inf - inf, a NaN whose sign bit is
    set, returned as its own object (not `math.nan`) by both engines."""
    times = [T0, T0 + 1, T0 + 2, T0 + 7200, T0 + 7201, T0 + 7202]  # the last hour: inf - inf
    ops = [("event", f"x{i}", t, "c", "m", 1e308, None, None, math.nan, math.nan, None, "")
           for i, t in enumerate(times)]  # fmt: skip
    run_both(ops, EngineConfig())
    engine = FeatureEngine()
    vectors = [call(engine, op)[0] for op in ops]
    made = [v for v in vectors[-1] if v[0] == "float" and v[1] == "nan" and not v[3]]
    assert made, "no NaN from arithmetic: the test no longer covers it"


def test_process_takes_the_same_keywords() -> None:
    compiled, python = FeatureEngine(), FeatureEngine(config=EngineConfig(compiled=False))
    for engine in (compiled, python):
        engine.process(txn_id="a", t=T0, card_id="c", merchant_id="m", amount=5.0)
    kwargs = {"txn_id": "b", "t": T0 + 1, "card_id": "c", "merchant_id": "m", "amount": 7,
              "channel": "online", "lat": 10.0, "lon": 20.0, "fingerprint": "fp"}  # fmt: skip
    assert exact(compiled.process(**kwargs)) == exact(python.process(**kwargs))


@pytest.mark.parametrize("field", ["ts", "cum", "lat", "lon"])
@pytest.mark.parametrize("bad", [None, "f"], ids=["none", "float32"])
def test_state_arrays_of_another_kind_are_refused_not_misread(field: str, bad: str | None) -> None:
    engine = FeatureEngine()
    engine.process("a", T0, "c", "m", 1.0, lat=1.0, lon=1.0)
    card = engine.store.table("card")["c"]
    setattr(card, field, None if bad is None else array(bad, [0.0] * len(getattr(card, field))))
    with pytest.raises(TypeError, match="typecode 'd'"):
        engine.process("b", T0 + 1, "c", "m", 1.0)  # no location: lat and lon only appended


def test_a_dropped_engine_is_freed_by_the_collector_and_a_temporary_one_works() -> None:
    """The engine and its compiled step hold each other: the cyclic collector frees both.
    A temporary engine's step keeps it alive for the call (`FeatureEngine().process(...)`)."""
    engine = FeatureEngine()
    engine.process("a", T0, "c", "m", 1.0)
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None
    first = FeatureEngine().process("a", T0, "c", "m", 1.0)
    assert exact(first) == exact(FeatureEngine(config=EngineConfig(compiled=False)).process(
        "a", T0, "c", "m", 1.0
    ))  # fmt: skip


def test_kernels_built_from_another_source_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fe.hashlib.sha256(fe.KERNELS_SOURCE.read_bytes()).hexdigest() == kernels.BUILT_FROM
    edited = tmp_path / "feature_kernels.pyx"
    edited.write_text(fe.KERNELS_SOURCE.read_text() + "\n# edited, not rebuilt\n")
    monkeypatch.setattr(fe, "KERNELS_SOURCE", edited)
    assert fe._compiled_kernels() == (
        None,
        "built from another feature_kernels.pyx (make setup rebuilds them)",
    )


class _Names(pickle.Unpickler):
    """Records every class and function a pickle names."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.names: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.names.add((module, name))
        return super().find_class(module, name)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_a_snapshot_names_only_what_the_previous_version_has(
    tmp_path: Path, compiled: bool
) -> None:
    """A rollback reads the snapshot: the state pickles as the Python classes, with their
    slots, whichever engine wrote it."""
    engine = FeatureEngine(config=EngineConfig(compiled=compiled))
    for op in stream(51, n=500):
        call(engine, op)
    engine.snapshot(tmp_path / "state.pkl")
    with open(tmp_path / "state.pkl", "rb") as f:
        names = _Names(f)
        names.load()
    ours = {(m, n) for m, n in names.names if m.startswith("serving")}
    assert ours == {
        ("serving.feature_engine", "CardState"),
        ("serving.feature_engine", "MerchantState"),
        ("serving.feature_engine", "KnownFrauds"),
    }
