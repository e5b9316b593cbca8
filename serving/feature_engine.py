"""The streaming feature engine: per-event features from per-entity state, online and offline.

`process` reads an entity's state, computes the event's feature vector from the history
strictly before it, then adds the event to the state. The offline training table is this
same engine replaying the event log, so training and serving cannot disagree.

Hand-written because nothing off the shelf does this in-process at microsecond latency:
Feast and Chronon serve features computed by a separate (Spark/Flink) job, and stream
libraries such as River keep approximate or tumbling windows, not exact "strictly before
(event_time, transaction_id)" sliding windows with label-time rules. Per entity the state
is a few parallel arrays sorted by time; windows are found with `bisect` and sums come from
prefix sums, so the cost per event barely depends on how active a card is.

Time is UTC epoch seconds (float) throughout.

This module is the reference implementation. `serving/feature_kernels.pyx` compiles the
per-event step (built-ins, declared windows, the merchant's hour, the in-memory `process`)
and every engine uses it when it is built; `EngineConfig(compiled=False)` runs this code,
and tests/serving/test_feature_kernels.py requires the two to agree bit for bit.

What is computed comes from the feature set's declaration (`serving/features.py`): every
card or merchant window (count, sum, mean, known frauds, fraud rate; any width, lagged by
the label maturity or not) is derived from it, grouped by window so each is bisected once;
the other features are built in and must be declared exactly as the engine computes them.

Ordering and lateness: the engine's clock is the latest event_time it has processed
(labels do not move it). An event no older than `allowed_lateness_s` behind the clock is
inserted at its place in time, so later events see it exactly as if it had come in order.
An older ("too late") event still gets features from the state as it is, but it is not
added to any state: events already scored must not change retroactively. Counted in
`counters["too_late"]`.
"""

import hashlib
import importlib
import logging
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from math import asin, cos, radians, sin, sqrt
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from serving.events import CHANNELS
from serving.features import (
    DAY,
    DEFAULT_FEATURE_SET,
    FEATURES,
    HOUR,
    MERCHANT_CATEGORIES,
    OTHER_CATEGORY,
    Aggregation,
    Entity,
    Feature,
    FeatureSet,
    Of,
    feature_set_from_declaration,
)
from serving.logs import log_event
from serving.retries import ConflictingEvent, Processed, Remembered, changed_fields, check_call
from serving.state_store import InMemoryStore, StateStore
from serving.timeparse import iso, parse_event_time

NAN = math.nan
EARTH_RADIUS_KM = 6371.0088
MIN_TRAVEL_HOURS = 1.0 / 60.0  # speeds are measured over at least a minute
_CATEGORY_CODE = {name: float(i) for i, name in enumerate(MERCHANT_CATEGORIES)}
COUNTERS = (
    "duplicates", "too_late",
    "labels", "labels_applied", "labels_not_fraud", "labels_duplicate", "labels_unknown",
)  # fmt: skip
_LAST_SEEN = attrgetter("last_seen")
_TXN_TIME = itemgetter(2)
_KEPT_EVENT_TIME = itemgetter(0)
_LABELLED_EVENT_TIME = itemgetter(1)
EVICT_EVERY = 1_024
# Entries older than every window are trimmed a day's worth at a time, not one per event.
TRIM_SLACK_S = DAY  # events between sweeps of idle entities (memory only, not semantics)
_W1H, _W24H, _W30D = HOUR, DAY, 30 * DAY
SNAPSHOT_FORMAT = 2  # bump when the state's classes change shape: older snapshots start cold
STATE_TABLES = {
    "cards": "card", "merchants": "merchant", "txns": "txn", "labels": "label",
    "answers": "answer",
}  # fmt: skip
log = logging.getLogger("sentinel.serving")

KERNELS_SOURCE = Path(__file__).with_name("feature_kernels.pyx")


def _compiled_kernels() -> tuple[Any, str]:
    """The compiled kernels (serving/feature_kernels.pyx, built by `make setup`), or None
    and why not: not built (no C compiler: the Python code computes the same, slower), or
    built from another source than the one beside them (edited and not rebuilt)."""
    try:
        kernels = importlib.import_module("serving.feature_kernels")
    except ModuleNotFoundError as exc:
        if exc.name != "serving.feature_kernels":
            raise  # a bug inside the kernels' own imports: not a missing build
        return None, "not built (make setup builds them with a C compiler)"
    if KERNELS_SOURCE.exists():  # a source checkout: the build must be of this source
        source = hashlib.sha256(KERNELS_SOURCE.read_bytes()).hexdigest()
        if source != kernels.BUILT_FROM:
            return None, f"built from another {KERNELS_SOURCE.name} (make setup rebuilds them)"
    return kernels, "compiled"


_kernels, KERNELS = _compiled_kernels()  # the service logs which at its start
KERNELS_BUILT = _kernels is not None


# `FeatureEngine.process`'s arguments: txn_id, t, card_id, merchant_id, amount, channel,
# device_id, lat, lon, merchant_category.
EventArgs = tuple[str, float, str, str, float, str | None, str | None, float, float, str | None]


@dataclass(frozen=True)
class EngineConfig:
    allowed_lateness_s: float = 300.0
    # How long transaction ids are remembered: retries inside it are not counted twice, and
    # labels that carry only a transaction_id are attributed to its card and merchant.
    dedup_window_s: float = 2 * DAY
    features: FeatureSet = DEFAULT_FEATURE_SET
    # Compute with the compiled kernels when they are built (same results, faster); False
    # runs the Python reference, which the kernels are tested against.
    compiled: bool = True


class RefusedEvent(ValueError):
    """Event `index` of a `process_many` call was refused (the message names the field)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


class FeatureSetError(ValueError):
    """A declared feature this engine cannot compute; the message names it."""


# Built-in features, in the order `process` computes them: the default declaration's
# features that are not plain windows. A feature set may use any of them, as declared here.
BUILTIN: dict[str, Feature] = {f.name: f for f in FEATURES if not f.windowed}
_COUNT, _SUM, _MEAN, _FRAUDS, _RATE = range(5)
_KIND = {
    (Aggregation.COUNT, Of.PAYMENTS): _COUNT,
    (Aggregation.SUM, Of.AMOUNT): _SUM,
    (Aggregation.MEAN, Of.AMOUNT): _MEAN,
    (Aggregation.COUNT, Of.FRAUDS): _FRAUDS,
    (Aggregation.RATE, Of.FRAUDS): _RATE,
}


class KnownFrauds:
    """An entity's frauds whose labels have arrived: event times sorted, with label times."""

    __slots__ = ("label_ts", "latest_label", "ts")

    def __init__(self) -> None:
        self.ts = array("d")
        self.label_ts = array("d")
        self.latest_label = -math.inf

    def add(self, event_time: float, label_time: float, horizon: float) -> None:
        k = bisect_right(self.ts, horizon)  # frauds are few: trim here, not per event
        if k:
            del self.ts[:k], self.label_ts[:k]
        p = bisect_right(self.ts, event_time)
        self.ts.insert(p, event_time)
        self.label_ts.insert(p, label_time)
        self.latest_label = max(self.latest_label, label_time)

    def count(self, after: float, until: float, strict: bool, t: float) -> int:
        """Frauds with after < event_time <= until (< until if strict), labelled by `t`."""
        ts = self.ts
        a = bisect_right(ts, after)
        b = bisect_left(ts, until) if strict else bisect_right(ts, until)
        n = b - a
        if n > 0 and self.latest_label > t:  # rare: a late event, or a label from the future
            label_ts = self.label_ts
            n -= sum(1 for i in range(a, b) if label_ts[i] > t)
        return n


class VectorPlan:
    """The feature vector of a feature set, compiled from its declaration.

    A card or merchant window is (start offset, end offset): it covers history with
    `t - start < event_time <= t - end`, or everything strictly before the event when the end
    offset is None (not lagged). Features sharing a bound share its bisection.

    `vector` is generated Python source (as `dataclasses` generates `__init__`): one
    straight-line function per feature set, which takes the built-in values and the card's
    and merchant's state and returns the vector in declared order. A loop over the declared
    windows measured about twice as slow per event, and this is the per-event hot path.
    `source` shows the code.
    """

    def __init__(self, features: FeatureSet, merchant_counted: bool = False) -> None:
        builtin = {name: i for i, name in enumerate(BUILTIN)}
        # `process` bisects the card's last 24 hours and 30 days for the built-ins already.
        given = {_W24H: "s24h", _W30D: "s30d"}
        card = _EntityWindows("c", "ts", "p", "cum", "cf", features, Entity.CARD, given)
        merchant = _EntityWindows(
            "m", "mts", "mp", None, "mf", features, Entity.MERCHANT, counted=merchant_counted
        )
        self.card, self.merchant = card, merchant
        self.card_reach_s = max([_W30D, *card.offsets])  # the card payments any feature reads
        # Each feature in order: a built-in's index, or the entity whose window it is (what
        # the compiled kernels build their own vector from).
        self.computed: list[tuple[str, int | str]] = []
        expressions = []
        for f in features.features:
            if not f.windowed:
                expressions.append(f"b{builtin[f.name]}")
                self.computed.append((f.name, builtin[f.name]))
            else:
                expressions.append((card if f.entity is Entity.CARD else merchant).expression(f))
                self.computed.append((f.name, str(f.entity)))
        # Built-ins come as arguments b0, b1, ... (BUILTIN order): cheaper than a tuple.
        values = ", ".join(f"b{i}" for i in range(len(BUILTIN)))
        lines = [f"def vector(t, ts, p, s24h, s30d, cum, cf, mts, mp, mf, {values}):"]
        lines += [f"    {line}" for line in (*card.statements(), *merchant.statements())]
        lines.append(f"    return [{', '.join(expressions)}]")
        self.source = "\n".join(lines) + "\n"
        namespace: dict[str, Any] = {
            "bisect_left": bisect_left, "bisect_right": bisect_right, "NAN": NAN,
        }  # fmt: skip
        exec(compile(self.source, "<feature vector>", "exec"), namespace)
        self.vector: Callable[..., list[float]] = namespace["vector"]


class _EntityWindows:
    """Source code for one entity's declared windows, its variables named with `prefix`."""

    def __init__(
        self,
        prefix: str,
        ts: str,
        p: str,
        cum: str | None,
        frauds: str,
        features: FeatureSet,
        entity: Entity,
        given: dict[float, str] | None = None,  # offset -> a variable already holding its bound
        counted: bool = False,  # bounds and known frauds arrive counted, in `frauds` (below)
    ) -> None:
        self.prefix, self.ts, self.p, self.cum, self.frauds = prefix, ts, p, cum, frauds
        self.given = given or {}
        self.counted = counted
        self.spans: dict[str, tuple[float, float | None]] = {}  # feature -> window
        self.kinds: dict[str, int] = {}
        for f in features.features:
            if f.windowed and f.entity is entity:
                self.spans[f.name] = features.window(f)
                self.kinds[f.name] = _KIND[f.aggregation, f.of]
        # Payment bounds only where a feature reads payments (a fraud count reads frauds only).
        paid = [s for n, s in self.spans.items() if self.kinds[n] != _FRAUDS]
        self.offsets = sorted({o for span in paid for o in span if o is not None})
        fraud_windows = [s for n, s in self.spans.items() if self.kinds[n] in (_FRAUDS, _RATE)]
        self.fraud_windows = sorted(set(fraud_windows), key=fraud_windows.index)

    def _bound(self, offset: float | None) -> str:
        """The index in ts where history up to `t - offset` ends (p: strictly before t)."""
        if offset is None:
            return self.p
        if self.counted:
            return f"{self.frauds}[{self.offsets.index(offset)}]"
        return self.given.get(offset, f"{self.prefix}i{self.offsets.index(offset)}")

    def _known(self, span: tuple[float, float | None]) -> str:
        if self.counted:
            return f"{self.frauds}[{len(self.offsets) + self.fraud_windows.index(span)}]"
        return f"{self.prefix}k{self.fraud_windows.index(span)}"

    def statements(self) -> list[str]:
        """Counted: the state store has counted everything (`counts` says in which order)."""
        if self.counted:
            return []
        lines, upper = [], self.p
        for o in self.offsets:  # ascending offsets, so each bound is at most the previous one
            bound = self._bound(o)
            if o not in self.given:
                lines.append(f"{bound} = bisect_right({self.ts}, t - {o!r}, 0, {upper})")
            upper = bound
        if self.fraud_windows:
            lines += self._fraud_statements()
        return lines

    def _fraud_statements(self) -> list[str]:
        """Known frauds per window: two bisections of the fraud times, except when a label
        later than the event exists (a late event, or a label stamped ahead of the clock):
        then `KnownFrauds.count` also checks each label time. A window not lagged counts
        frauds strictly before t."""
        ft, frauds = f"{self.prefix}ft", self.frauds
        offsets = sorted({o for span in self.fraud_windows for o in span if o is not None})
        at = {o: f"{self.prefix}j{n}" for n, o in enumerate(offsets)}
        fast = [f"{at[o]} = bisect_right({ft}, t - {o!r})" for o in offsets]
        now = f"{self.prefix}now"
        if any(end is None for _, end in self.fraud_windows):
            fast.append(f"{now} = bisect_left({ft}, t)")
        slow, none = [], []
        for span in self.fraud_windows:
            start, end = span
            k = self._known(span)
            if end is None:
                fast.append(f"{k} = {now} - {at[start]}")
                slow.append(f"{k} = {frauds}.count(t - {start!r}, t, True, t)")
            else:
                fast.append(f"{k} = {at[end]} - {at[start]}")
                slow.append(f"{k} = {frauds}.count(t - {start!r}, t - {end!r}, False, t)")
            none.append(f"{k} = 0")
        lines = [f"{ft} = None if {frauds} is None else {frauds}.ts"]
        for condition, body in (
            (f"if not {ft}:", none),
            (f"elif {frauds}.latest_label <= t:", fast),
            ("else:", slow),
        ):
            lines += [condition, *(f"    {line}" for line in body)]
        return lines

    def counts(self, t: float) -> tuple[list[float], list[tuple[float, float, bool]]]:
        """What a store that counts for the plan (`counted`) counts, in the order the vector
        reads them: the payments at or before each bound `t - offset`, then each fraud
        window as (after, until, strict) for `KnownFrauds.count`."""
        bounds = [t - o for o in self.offsets]
        windows = [
            (t - start, t, True) if end is None else (t - start, t - end, False)
            for start, end in self.fraud_windows
        ]
        return bounds, windows

    def expression(self, feature: Feature) -> str:
        span, kind = self.spans[feature.name], self.kinds[feature.name]
        if kind == _FRAUDS:
            return self._known(span)
        a, b = self._bound(span[0]), self._bound(span[1])
        template = {
            _COUNT: "({b} - {a})",
            _SUM: "({cum}[{b}] - {cum}[{a}])",
            _MEAN: "(({cum}[{b}] - {cum}[{a}]) / ({b} - {a}) if {b} > {a} else NAN)",
            # min(1.0, k / n), without a call: labels may name payments the state never held.
            _RATE: "(NAN if {b} <= {a} else 1.0 if {k} >= {b} - {a} else {k} / ({b} - {a}))",
        }[kind]
        known = self._known(span) if span in self.fraud_windows else ""
        return template.format(a=a, b=b, cum=self.cum, k=known)


def _check_computable(features: FeatureSet) -> None:
    for f in features.features:
        if f.windowed:
            if f.window_s is None or not (math.isfinite(f.window_s) and f.window_s > 0):
                raise FeatureSetError(f"{f.name}: a window feature needs a window > 0")
            if f.entity is Entity.MERCHANT and f.aggregation in (Aggregation.SUM, Aggregation.MEAN):
                raise FeatureSetError(f"{f.name}: merchant windows count, they do not sum")
        elif BUILTIN.get(f.name) != f:
            raise FeatureSetError(
                f"{f.name}: this engine does not compute {f.aggregation} of {f.of} per "
                f"{f.entity} over {f.window_s}s as declared"
            )
    if len(set(features.names)) != len(features.names):
        raise FeatureSetError("feature names must be unique")


CARD_FIELDS = (
    "cum", "device_times", "devices", "fraud_reported_at", "frauds", "ids", "last_seen", "lat",
    "lon", "merchants", "ts",
)  # fmt: skip
MERCHANT_FIELDS = ("cards", "frauds", "ids", "last_seen", "ts", "window_cards", "window_start")


class CardState:
    """A card's payments of the last 30 days (+ lateness), as parallel arrays sorted by time.

    The compiled kernels have the same class with C fields (`feature_kernels.CardState`),
    which pickles as this one: snapshots keep the layout of the versions before (a rollback
    reads them), and an engine takes over state of the other class when it starts."""

    __slots__ = CARD_FIELDS

    def __init__(self) -> None:
        self.ts = array("d")
        self.ids: list[str] = []
        self.cum = array("d", [0.0])  # cum[i] = sum of the first i amounts
        self.merchants: list[str] = []
        self.devices: list[str | None] = []
        self.device_times: dict[str, float] = {}  # device -> its latest payment kept above
        self.lat = array("d")  # radians, NaN when unknown
        self.lon = array("d")
        self.fraud_reported_at = math.inf  # earliest label_time of a fraud on this card
        self.frauds: KnownFrauds | None = None  # most cards never have one: no arrays
        self.last_seen = -math.inf


class MerchantState:
    __slots__ = MERCHANT_FIELDS

    def __init__(self) -> None:
        self.ts = array("d")
        self.ids: list[str] = []
        self.cards: list[str] = []
        self.frauds: KnownFrauds | None = None
        self.last_seen = -math.inf
        # The last hour's cards as counts, slid forward with each in-order event, so a busy
        # merchant's distinct-card count costs O(1) per event instead of a set of the hour.
        # None after a late insertion: rebuilt at the next in-order event.
        self.window_cards: dict[str, int] | None = {}
        self.window_start = 0


def _from_fields(cls: type, names: tuple[str, ...], fields: Sequence[Any]) -> Any:
    state = cls()
    for name, value in zip(names, fields, strict=True):
        setattr(state, name, value)
    return state


def _as_class(table: MutableMapping[str, Any], cls: type, names: tuple[str, ...]) -> None:
    """Every state in `table` as `cls` (a snapshot written by the other engine, or by a
    version whose classes pickled by reference)."""
    for key, state in table.items():
        if type(state) is not cls:
            table[key] = _from_fields(cls, names, [getattr(state, name) for name in names])


def _merchant_hour(m: MerchantState, t: float, in_order: bool, mp: int) -> tuple[int, int]:
    """(index where the last hour starts, distinct cards in it), history before `mp`."""
    cutoff = t - _W1H
    if not in_order:
        start = bisect_right(m.ts, cutoff, 0, mp)
        return start, len(set(m.cards[start:mp]))
    counts = m.window_cards
    ts, cards = m.ts, m.cards
    if counts is None:  # rebuild after a late insertion
        start = bisect_right(ts, cutoff, 0, mp)
        counts = m.window_cards = {}
        for card in cards[start:mp]:
            counts[card] = counts.get(card, 0) + 1
        m.window_start = start
        return start, len(counts)
    start = m.window_start
    while start < mp and ts[start] <= cutoff:
        card = cards[start]
        left = counts[card] - 1
        if left:
            counts[card] = left
        else:
            del counts[card]
        start += 1
    m.window_start = start
    return start, len(counts)


def feature_vector(
    vector: Callable[..., list[float]],
    card: CardState,
    p: int,
    t: float,
    amount: float,
    channel: str | None,
    device_id: str | None,
    lat: float,  # radians, NaN when unknown
    lon: float,
    category: str | None,
    mts: array,
    mp: int,
    mf: Any,  # the merchant's KnownFrauds, or what a counting store counted (VectorPlan)
    cards1h: int,
) -> list[float]:
    """The event's vector from its card's history before index `p` and its merchant's.

    Both stores compute through here: the in-memory engine from its own state, the Redis
    one from the state its script returned, so the two cannot compute differently.
    """
    ts, cum = card.ts, card.cum
    s24h = bisect_right(ts, t - _W24H, 0, p)
    s30d = bisect_right(ts, t - _W30D, 0, p)
    n30d = p - s30d
    avg30d = (cum[p] - cum[s30d]) / n30d if n30d else NAN
    ratio30d = amount / avg30d if n30d and avg30d > 0 else NAN
    since = (t - ts[p - 1]) / DAY if n30d else NAN

    km = speed = NAN
    if lat == lat and lon == lon:  # not NaN
        lats = card.lat
        i = p - 1
        while i >= s30d and lats[i] != lats[i]:
            i -= 1
        if i >= s30d:  # haversine, inlined: this is the hot path
            dlat = sin((lat - lats[i]) / 2)
            dlon = sin((lon - card.lon[i]) / 2)
            h = dlat * dlat + cos(lats[i]) * cos(lat) * dlon * dlon
            km = 2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(h)))
            speed = km / max((t - ts[i]) / HOUR, MIN_TRAVEL_HOURS)

    devices = card.devices
    if device_id is None:
        device_seen = NAN
    elif p == len(ts):  # in order: the device's latest use is before this event
        device_seen = 1.0 if card.device_times.get(device_id, -math.inf) > t - _W30D else 0.0
    else:
        device_seen = 1.0 if device_id in devices[s30d:p] else 0.0
    n24h = p - s24h
    if n24h:
        recent = set(devices[s24h:p])
        recent.discard(None)
        devices24h = len(recent)
    else:
        devices24h = 0

    # Built-ins in BUILTIN order after the state; the plan adds the declared windows and
    # orders them all (counts stay ints: cheaper, and exact as floats downstream).
    return vector(
        t, ts, p, s24h, s30d, cum, card.frauds, mts, mp, mf,
        amount,
        (t // HOUR) % 24,
        (t // DAY + 3) % 7,  # 1970-01-01 was a Thursday
        NAN if channel is None else (1.0 if channel == "online" else 0.0),
        NAN if category is None else _CATEGORY_CODE.get(category, OTHER_CATEGORY),
        len(set(card.merchants[s24h:p])) if n24h > 1 else n24h,
        since,
        ratio30d,
        km,
        speed,
        device_seen,
        devices24h,
        cards1h,
        1.0 if card.fraud_reported_at <= t else 0.0,
    )  # fmt: skip


def _position(ts: array, ids: list[str], t: float, txn_id: str) -> int:
    """Where a late (t, txn_id) belongs: everything before this index is strictly earlier."""
    n = len(ts)
    p = bisect_left(ts, t)
    while p < n and ts[p] == t and ids[p] < txn_id:
        p += 1
    return p


def _insert_card_event(
    card: CardState,
    p: int,
    t: float,
    txn_id: str,
    amount: float,
    merchant_id: str,
    device_id: str | None,
    lat: float,
    lon: float,
) -> None:
    """A late event: insert at its place in time and shift the prefix sums after it."""
    card.ts.insert(p, t)
    card.ids.insert(p, txn_id)
    card.cum.insert(p + 1, card.cum[p] + amount)
    for i in range(p + 2, len(card.cum)):
        card.cum[i] += amount
    card.merchants.insert(p, merchant_id)
    card.devices.insert(p, device_id)
    if device_id is not None:
        card.device_times[device_id] = max(card.device_times.get(device_id, -math.inf), t)
    card.lat.insert(p, lat)
    card.lon.insert(p, lon)
    card.last_seen = max(card.last_seen, t)


def _evict_card(card: CardState, horizon: float) -> None:
    k = bisect_right(card.ts, horizon)
    if k:
        del card.ts[:k], card.ids[:k], card.cum[:k], card.merchants[:k]
        del card.devices[:k], card.lat[:k], card.lon[:k]
        if len(card.device_times) > 4:  # stale entries are harmless (time-checked on read)
            gone = [d for d, last in card.device_times.items() if last <= horizon]
            for device in gone:
                del card.device_times[device]


def _insert_merchant_event(m: MerchantState, p: int, t: float, txn_id: str, card_id: str) -> None:
    m.ts.insert(p, t)
    m.ids.insert(p, txn_id)
    m.cards.insert(p, card_id)
    m.last_seen = max(m.last_seen, t)
    m.window_cards = None  # indices shifted: rebuild the hour's counts at the next event


def _evict_merchant(m: MerchantState, horizon: float) -> None:
    k = bisect_right(m.ts, horizon)
    if k:
        del m.ts[:k], m.ids[:k], m.cards[:k]
        if m.window_start >= k:
            m.window_start -= k
        else:
            m.window_cards = None


class FeatureEngine:
    """Online state plus the feature computation; one instance per process (or per replay)."""

    def __init__(self, store: StateStore | None = None, config: EngineConfig | None = None):
        self.store: StateStore = store if store is not None else InMemoryStore()
        self.config = config or EngineConfig()
        self.clock = -math.inf  # latest event_time processed
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._events = 0  # the hot path counts here; `counters` reads it
        # What happened to the last processed event's state: added, duplicate or too_late.
        self.last_state = "added"
        self.last_answer: bytes | None = None  # a duplicate's stored answer, if any
        self._lateness = self.config.allowed_lateness_s
        self._dedup_window = self.config.dedup_window_s
        self._cards: MutableMapping[str, CardState] = self.store.table("card")
        self._merchants: MutableMapping[str, MerchantState] = self.store.table("merchant")
        # id -> (card, merchant, event_time), and id -> (label_time, event_time)
        self._txns: MutableMapping[str, tuple[str, str, float]] = self.store.table("txn")
        # For retries (serving/retries.py): id -> (event_time, fingerprint of the request's
        # body, the answer given as JSON bytes or None until known); ids without one have "".
        self._kept: MutableMapping[str, tuple[float, str, bytes | None]] = self.store.table(
            "answer"
        )
        self._keep = self.store.adder("answer")
        self._labels: MutableMapping[str, tuple[float, float]] = self.store.table("label")
        self._remember_txn = self.store.adder("txn")
        features = self.config.features
        _check_computable(features)
        self.feature_names = features.names
        self._reach = features.longest_reach_s()
        self.plan = VectorPlan(features)
        self._vector: Callable[..., list[float]] = self.plan.vector
        self._feature_vector = feature_vector
        self._merchant_hour = _merchant_hour
        self._card_state: Callable[[], Any] = CardState
        self._merchant_state: Callable[[], Any] = MerchantState
        self.kernels = "python"
        self.compiled_process: Any = None  # the compiled `process` (in-memory store), if any
        if self.config.compiled and _kernels is not None:
            self.kernels = "compiled"
            self._vector = _kernels.WindowVector(self.plan)
            self._feature_vector = _kernels.feature_vector
            self._merchant_hour = _kernels.merchant_hour
            self._card_state = _kernels.CardState
            self._merchant_state = _kernels.MerchantState
        if isinstance(self.store, InMemoryStore):
            _as_class(self._cards, self._card_state, CARD_FIELDS)  # type: ignore[arg-type]
            _as_class(self._merchants, self._merchant_state, MERCHANT_FIELDS)  # type: ignore[arg-type]
            if self.kernels == "compiled" and type(self) is FeatureEngine:
                # The whole step compiled. An instance attribute shadows the method, so
                # `engine.process(...)` reaches it with no Python call in between.
                self.compiled_process = _kernels.InMemoryProcess(self, _python_steps())
                vars(self)["process"] = self.compiled_process.process

    # The first state-journal segment this state does not include, saved and restored with
    # the snapshot (None: not journaled; see serving/journal.py).
    journal_next: int | None = None

    def snapshot(self, path: Path) -> None:
        """Save state and clock to `path` (atomic), for a restart to resume from."""
        if not isinstance(self.store, InMemoryStore):
            raise TypeError("only the in-memory store is snapshotted; shared stores persist")
        extra = {
            "format": SNAPSHOT_FORMAT,
            "clock": self.clock,
            # Plain values: the feature set is the restoring service's own, not the snapshot's.
            "config": {
                "allowed_lateness_s": self.config.allowed_lateness_s,
                "dedup_window_s": self.config.dedup_window_s,
                "features": self.config.features.declaration(),
            },
            "events": self._events,
            "counters": self.counters,
            "journal_next": self.journal_next,
        }
        self.store.snapshot(path, extra)

    @classmethod
    def restore(
        cls,
        path: Path,
        features: FeatureSet | None = None,
        max_clock: float | None = None,
        dedup_window_s: float | None = None,
        compiled: bool = True,
    ) -> "FeatureEngine":
        """An engine that continues exactly where the snapshotted one stopped.

        The state holds payments and labels, not feature values, so it can serve another
        feature set (`features`): windows longer than the old one's reach start partly cold.
        A clock beyond `max_clock` (the wall clock plus the allowed skew: a bad timestamp
        absorbed by an older version) is clamped to it, with a warning, so it cannot make
        every later event too late. `dedup_window_s` replaces the saved one (the ids are
        kept by event time, so a longer window finds those still held).
        """
        store, extra = InMemoryStore.restore(path)
        if extra.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"{path}: a snapshot of another engine version")
        saved = extra["config"]
        config = EngineConfig(
            allowed_lateness_s=saved["allowed_lateness_s"],
            dedup_window_s=dedup_window_s or saved["dedup_window_s"],
            features=features or feature_set_from_declaration(saved["features"]),
            compiled=compiled,
        )
        engine = cls(store=store, config=config)
        engine.clock = extra["clock"]
        engine._events = extra["events"]
        engine.counters = dict(extra["counters"])
        engine.journal_next = extra.get("journal_next")
        if max_clock is not None and engine.clock > max_clock:
            log_event(
                log, logging.WARNING, "feature_state_clock_clamped",
                snapshot_clock=engine.clock, max_clock=max_clock,
            )  # fmt: skip
            engine.clock = max_clock
        return engine

    def unavailable(self) -> str | None:
        """Why the state cannot be used now (a shared store down), or None."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters of what the engine did, and how much state it holds."""
        return {"events": self._events, **self.counters}

    def event_clock(self) -> float:
        """The latest event time the state has seen (epoch seconds; -inf before any): events
        older than it by more than the lateness window are too late for the state."""
        return self.clock

    def limit_state(self, max_cards: int | None, max_merchants: int | None) -> None:
        """Hold at most this many cards and merchants, evicting the least recently used
        (by `last_seen`). An evicted one starts cold, like one idle beyond every window.
        Only a store with `cap` (the in-memory one) is limited; a shared store bounds its
        memory its own way."""
        cap = getattr(self.store, "cap", None)
        if cap is not None:
            cap("card", max_cards, _LAST_SEEN)
            cap("merchant", max_merchants, _LAST_SEEN)

    def state_stats(self) -> dict[str, Any]:
        """How much state is held per table, the caps, and the keys evicted (per table and
        reason: cap or idle) by this process."""
        store: Any = self.store
        sizes = {name: len(store.table(table)) for name, table in STATE_TABLES.items()}
        limits = store.limits() if hasattr(store, "limits") else {}
        evicted = store.evictions() if hasattr(store, "evictions") else {}
        return {**sizes, "limits": limits, "evicted": evicted}

    # -- events -------------------------------------------------------------------------

    def process_many(
        self, events: Sequence[EventArgs], fingerprints: Sequence[str] | None = None
    ) -> list[Processed]:
        """Events in order, each seeing the ones before. A shared store answers the whole
        call in one round trip. With `fingerprints` (one per event, of its request body), an
        event that reuses a remembered transaction id with another body raises
        ConflictingEvent naming it before any event of the call is processed."""
        if fingerprints is None:
            fingerprints = [""] * len(events)
        elif len(events) > 1:
            window = self._lateness + self._dedup_window
            check_call(events, fingerprints, self._retry_of, self.clock, window)
        process = self.process
        out = []
        for e, fp in zip(events, fingerprints, strict=True):
            vector = process(*e, fingerprint=fp)
            out.append(Processed(vector, self.last_state, self.last_answer))
        return out

    def _retry_of(self, txn_id: str) -> Remembered | None:
        seen = self._txns.get(txn_id)
        if seen is None:
            return None
        kept = self._kept.get(txn_id)
        fingerprint = kept[1] if kept is not None and kept[0] == seen[2] else ""
        return (seen[0], seen[1], seen[2], fingerprint)

    def remember_answers(self, answers: Sequence[tuple[str, str, bytes]]) -> None:
        """Keep the answer given for each (transaction id, fingerprint): a retry with the
        same body gets it back for as long as the id is remembered. The first answer kept
        for a payment stays; an id no longer remembered is skipped."""
        for txn_id, fingerprint, answer in answers:
            seen = self._txns.get(txn_id)
            if seen is None:
                continue
            # A copy of exactly its size: orjson's bytes keep a 4 KiB buffer (measured).
            answer = bytes(memoryview(answer))
            kept = self._kept.get(txn_id)
            if kept is None or kept[0] != seen[2]:  # e.g. a journal written without it
                self._keep(txn_id, (seen[2], fingerprint, answer), seen[2])
            elif kept[2] is None:
                self._kept[txn_id] = (kept[0], kept[1] or fingerprint, answer)

    def process_event(self, event: Mapping[str, Any]) -> list[float]:
        """Validate a raw event (DESIGN.md §3 field names) and process it."""
        return self.process(*parse_event(event))

    def process(
        self,
        txn_id: str,
        t: float,
        card_id: str,
        merchant_id: str,
        amount: float,
        channel: str | None = None,
        device_id: str | None = None,
        lat: float = NAN,
        lon: float = NAN,
        category: str | None = None,
        fingerprint: str = "",
    ) -> list[float]:
        """The feature vector (FEATURE_NAMES order) of a validated event; updates the state.

        `fingerprint` identifies the request's body: a retry (an id remembered within the
        dedup window) with another body raises ConflictingEvent before anything changes;
        "" matches any body. A retry's stored answer, if any, is left in `last_answer`."""
        store = self.store
        clock = t if t > self.clock else self.clock
        watermark = clock - self._lateness
        horizon = watermark - self._reach  # nothing this old is in any window any more
        seen = self._txns.get(txn_id)
        reused = seen is not None and seen[2] <= watermark - self._dedup_window
        if reused:
            seen = None  # forgotten: the id is a new payment
        kept = None
        if seen is not None:
            kept = self._kept.get(txn_id)
            if kept is not None and kept[0] != seen[2]:
                kept = None  # kept for an earlier payment with this id
            if kept is not None and fingerprint and kept[1] and kept[1] != fingerprint:
                changed = changed_fields((*seen, kept[1]), card_id, merchant_id, t)
                raise ConflictingEvent(0, txn_id, changed)
        duplicate = seen is not None
        self.clock = clock
        self._events += 1

        card = self._cards.get(card_id)
        new_card = card is None or card.last_seen <= horizon  # expired state is no state
        if card is None or new_card:
            card = self._card_state()
        ts = card.ts
        p = len(ts)
        if p and (ts[-1] > t or (ts[-1] == t and card.ids[-1] >= txn_id)):
            p = _position(ts, card.ids, t, txn_id)
        lat, lon = radians(lat), radians(lon)  # NaN stays NaN

        merchant = self._merchants.get(merchant_id)
        new_merchant = merchant is None or merchant.last_seen <= horizon
        if merchant is None or new_merchant:
            merchant = self._merchant_state()
        mts = merchant.ts
        mp = len(mts)
        if mp and (mts[-1] > t or (mts[-1] == t and merchant.ids[-1] >= txn_id)):
            mp = _position(mts, merchant.ids, t, txn_id)
        # Only an event that will be added slides the hour: a later event of this merchant
        # may be earlier than a too-late one or a retry.
        slides = mp == len(mts) and t >= watermark and not duplicate
        _, cards1h = self._merchant_hour(merchant, t, slides, mp)

        vector = self._feature_vector(
            self._vector, card, p, t, amount, channel, device_id, lat, lon, category,
            mts, mp, merchant.frauds, cards1h,
        )  # fmt: skip

        if duplicate:
            self.counters["duplicates"] += 1
            self.last_state = "duplicate"
            self.last_answer = None if kept is None else kept[2]
            return vector
        self.last_answer = None
        self._remember_txn(txn_id, (card_id, merchant_id, t), t)
        if fingerprint:
            self._keep(txn_id, (t, fingerprint, None), t)
        elif reused:
            self._kept.pop(txn_id, None)
        if t < watermark:
            self.counters["too_late"] += 1
            self.last_state = "too_late"
            return vector
        self.last_state = "added"
        cum = card.cum
        if p == len(ts):  # in order: append (inlined, this is the hot path)
            ts.append(t)
            card.ids.append(txn_id)
            cum.append(cum[p] + amount)
            card.merchants.append(merchant_id)
            card.devices.append(device_id)
            if device_id is not None:
                card.device_times[device_id] = t
            card.lat.append(lat)
            card.lon.append(lon)
            if t > card.last_seen:
                card.last_seen = t
        else:
            _insert_card_event(card, p, t, txn_id, amount, merchant_id, device_id, lat, lon)
        if ts[0] <= horizon - TRIM_SLACK_S:
            _evict_card(card, horizon)
        if new_card:
            store.add("card", card_id, card, t)
        elif store.write_back:
            self._cards[card_id] = card
        if mp == len(mts):
            mts.append(t)
            merchant.ids.append(txn_id)
            merchant.cards.append(card_id)
            window = merchant.window_cards
            if window is not None:
                window[card_id] = window.get(card_id, 0) + 1
            if t > merchant.last_seen:
                merchant.last_seen = t
        else:
            _insert_merchant_event(merchant, mp, t, txn_id, card_id)
        if mts[0] <= horizon - TRIM_SLACK_S:
            _evict_merchant(merchant, horizon)
        if new_merchant:
            store.add("merchant", merchant_id, merchant, t)
        elif store.write_back:
            self._merchants[merchant_id] = merchant
        if self._events % EVICT_EVERY == 0:
            self._evict_idle(horizon, watermark)
        return vector

    def _evict_idle(self, horizon: float, watermark: float) -> None:
        # Memory only: expired state is already ignored when read, so results do not
        # depend on when this runs.
        store = self.store
        store.evict_idle("card", horizon, _LAST_SEEN)
        store.evict_idle("merchant", horizon, _LAST_SEEN)
        store.evict_idle("label", horizon, _LABELLED_EVENT_TIME)
        store.evict_idle("txn", watermark - self.config.dedup_window_s, _TXN_TIME)
        store.evict_idle("answer", watermark - self.config.dedup_window_s, _KEPT_EVENT_TIME)

    # -- labels -------------------------------------------------------------------------

    def _remembered(self, txn_id: str) -> tuple[str, str, float] | None:
        """(card, merchant, event_time) of a transaction id still remembered: time-checked
        here, so an answer never depends on when eviction last ran."""
        seen = self._txns.get(txn_id)
        if seen is None or seen[2] <= self.clock - self._lateness - self._dedup_window:
            return None
        return seen

    def apply_label(
        self,
        txn_id: str,
        is_fraud: bool,
        label_time: float,
        card_id: str | None = None,
        merchant_id: str | None = None,
        event_time: float | None = None,
    ) -> str:
        """Record a label; returns what happened: applied, not_fraud, duplicate or unknown.

        Without card, merchant and event time the label is attributed through the
        transaction ids remembered for `dedup_window_s`; older unknown ids are counted only.
        A label stamped before its event's time (given, or remembered for the id) raises
        ValueError naming `label_time`, before anything is changed or counted.
        """
        known = event_time
        if known is None:
            seen = self._remembered(txn_id)
            known = None if seen is None else seen[2]
        if known is not None and label_time < known:
            raise ValueError(label_before_event(label_time, known))
        store = self.store
        self.counters["labels"] += 1
        if not is_fraud:
            self.counters["labels_not_fraud"] += 1
            return "not_fraud"
        horizon = self.clock - self.config.allowed_lateness_s - self._reach
        applied = self._labels.get(txn_id)
        if applied is not None and applied[1] > horizon:  # time-checked, as `_remembered`
            self.counters["labels_duplicate"] += 1
            return "duplicate"
        if card_id is None or merchant_id is None or event_time is None:
            seen = self._remembered(txn_id)
            if seen is None:
                self.counters["labels_unknown"] += 1
                return "unknown"
            card_id, merchant_id, event_time = seen
        store.add("label", txn_id, (label_time, event_time), event_time)

        card = self._cards.get(card_id)
        if card is None or card.last_seen <= horizon:
            card = self._card_state()
        card.fraud_reported_at = min(card.fraud_reported_at, label_time)
        if card.frauds is None:
            card.frauds = KnownFrauds()
        card.frauds.add(event_time, label_time, horizon)
        card.last_seen = max(card.last_seen, label_time)
        store.add("card", card_id, card, card.last_seen)

        merchant = self._merchants.get(merchant_id)
        if merchant is None or merchant.last_seen <= horizon:
            merchant = self._merchant_state()
        if merchant.frauds is None:
            merchant.frauds = KnownFrauds()
        merchant.frauds.add(event_time, label_time, horizon)
        merchant.last_seen = max(merchant.last_seen, event_time)
        store.add("merchant", merchant_id, merchant, merchant.last_seen)
        self.counters["labels_applied"] += 1
        return "applied"


def _conflict(
    txn_id: str, seen: tuple[str, str, float], fingerprint: str, card: str, merchant: str, t: float
) -> None:
    raise ConflictingEvent(0, txn_id, changed_fields((*seen, fingerprint), card, merchant, t))


def _python_steps() -> dict[str, Any]:
    """What the compiled `process` calls back into: the rare paths, written once, here."""
    return {
        "_position": _position,
        "_insert_card_event": _insert_card_event, "_evict_card": _evict_card,
        "_insert_merchant_event": _insert_merchant_event, "_evict_merchant": _evict_merchant,
        "conflict": _conflict, "TRIM_SLACK_S": TRIM_SLACK_S, "EVICT_EVERY": EVICT_EVERY,
    }  # fmt: skip


def label_before_event(label_time: float, event_time: float) -> str:
    return f"label_time: {iso(label_time)} is before the event's event_time {iso(event_time)}"


def _required_str(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"{name}: required, a non-empty string without NUL (got {value!r})")
    return value


def _optional_str(event: Mapping[str, Any], name: str) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(
            f"{name}: must be a non-empty string without NUL when given (got {value!r})"
        )
    return value


def _coordinate(event: Mapping[str, Any], name: str, bound: float) -> float:
    value = event.get(name)
    if value is None:
        return NAN
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -bound <= value <= bound
    ):
        raise ValueError(f"{name}: must be a number in [-{bound:g}, {bound:g}] (got {value!r})")
    return float(value)


def parse_event(event: Mapping[str, Any]) -> tuple:
    """The positional arguments of `FeatureEngine.process`, or ValueError naming the field."""
    amount = event.get("amount")
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not math.isfinite(amount)
        or amount < 0
    ):
        raise ValueError(f"amount: required, a finite number >= 0 (got {amount!r})")
    channel = _optional_str(event, "channel")
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel: must be one of {', '.join(CHANNELS)} (got {channel!r})")
    if "event_time" not in event or event["event_time"] is None:
        raise ValueError("event_time: required")
    return (
        _required_str(event, "transaction_id"),
        parse_event_time(event["event_time"], "event_time"),
        _required_str(event, "card_id"),
        _required_str(event, "merchant_id"),
        float(amount),
        channel,
        _optional_str(event, "device_id"),
        _coordinate(event, "lat", 90.0),
        _coordinate(event, "lon", 180.0),
        _optional_str(event, "merchant_category"),
    )
