# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The feature engine's per-event step, compiled: the same results as the Python code.

`serving/feature_engine.py` stays the reference (`EngineConfig(compiled=False)`). Here, in
C: the built-in features (`feature_vector`), every declared card and merchant window
(`WindowVector`, from the same `VectorPlan` the Python engine generates its code from), the
merchant's sliding hour (`merchant_hour`), the state classes with C fields (`CardState`,
`MerchantState`) and the whole in-memory `process` step and replay loop (`InMemoryProcess`).
The rare paths (a late insertion, trimming, eviction sweeps, a conflicting retry, labels,
the Redis store's step, which computes through `feature_vector`) stay Python, written once.

Why Cython over the alternatives, measured on a 200k-event replay of the default stream
(2026-11-29): compiling the unchanged `feature_engine.py` with Cython gained ~1.15x and
mypyc would keep the generated window code interpreted; the cost is in bisecting `array`s
through Python's sequence protocol (a float object per probe) and in the window
arithmetic, which only typed code over the arrays' raw doubles removes.

Identical results, bit for bit (tests/serving/test_feature_kernels.py runs both on random
streams): the same operations in the same order on the same IEEE doubles; `//` and `%`
stay Python operations (C's differ on negative and edge values); counts stay Python ints
as in the Python code; compiled with -ffp-contract=off so no multiply-add is fused.
"""

from cpython cimport array
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport Py_SIZE
from libc.math cimport NAN, asin, cos, sin, sqrt
from libc.string cimport memcmp

import copyreg
import math

from serving.features import DAY, HOUR, MERCHANT_CATEGORIES, OTHER_CATEGORY

# The SHA-256 of this file when it was compiled (setup.py): the engine uses these kernels
# only if their source is the one beside them.
BUILT_FROM = SOURCE_SHA256

# The Python engine's constants (a test checks they are equal).
EARTH_RADIUS_KM = 6371.0088
MIN_TRAVEL_HOURS = 1.0 / 60.0
cdef double _EARTH_RADIUS_KM = EARTH_RADIUS_KM
cdef double _MIN_TRAVEL_HOURS = MIN_TRAVEL_HOURS
cdef double _HOUR = HOUR
cdef double _DAY = DAY
cdef double _W1H = HOUR
cdef double _W24H = DAY
cdef double _W30D = 30 * DAY
cdef dict _CATEGORY_CODE = {name: float(i) for i, name in enumerate(MERCHANT_CATEGORIES)}
cdef object _OTHER_CATEGORY = OTHER_CATEGORY
cdef object _NAN = math.nan
cdef object _NEG_INF = -math.inf
cdef double _DEG_TO_RAD = math.radians(1.0)  # math.radians(x) is x * this, exactly

cdef double _INF = math.inf


cdef class CardState:
    """`feature_engine.CardState` with C fields: the same attributes, read without a lookup.
    Pickled as the Python class (`_as_python`), so a snapshot has one layout whichever
    engine wrote it, the layout of the versions before (a rollback still reads it)."""

    cdef public array.array ts, cum, lat, lon
    cdef public list ids, merchants, devices
    cdef public dict device_times
    cdef public object frauds
    cdef public double fraud_reported_at, last_seen

    def __init__(self):
        self.ts = array.array("d")
        self.ids = []
        self.cum = array.array("d", [0.0])
        self.merchants = []
        self.devices = []
        self.device_times = {}
        self.lat = array.array("d")
        self.lon = array.array("d")
        self.fraud_reported_at = _INF
        self.frauds = None
        self.last_seen = -_INF

    def __reduce__(self):
        from serving.feature_engine import CARD_FIELDS, CardState

        return _as_python(self, CardState, CARD_FIELDS)


cdef class MerchantState:
    """`feature_engine.MerchantState` with C fields (see CardState)."""

    cdef public array.array ts
    cdef public list ids, cards
    cdef public object frauds, window_cards
    cdef public double last_seen
    cdef public Py_ssize_t window_start

    def __init__(self):
        self.ts = array.array("d")
        self.ids = []
        self.cards = []
        self.frauds = None
        self.last_seen = -_INF
        self.window_cards = {}
        self.window_start = 0

    def __reduce__(self):
        from serving.feature_engine import MERCHANT_FIELDS, MerchantState

        return _as_python(self, MerchantState, MERCHANT_FIELDS)


cdef tuple _as_python(object state, type cls, tuple names):
    """An instance of the Python class `cls` with these slots, as pickle rebuilds one
    (`copyreg._reconstructor`: pickle allows `__newobj__` of the object's own class only)."""
    return (
        copyreg._reconstructor,
        (cls, object, None),
        (None, {name: getattr(state, name) for name in names}),
    )


# The window kinds are feature_engine's `_KIND` values (a test checks they agree).
cdef enum:
    _COUNT = 0
    _SUM = 1
    _MEAN = 2
    _FRAUDS = 3
    _RATE = 4
    _BUILTIN = 5

# The built-ins (feature_engine.BUILTIN order; a test checks they agree): 14 values, the
# amount first (returned as given), three of them counts (returned as ints).
cdef enum:
    _N_BUILTIN = 14
    _AMOUNT = 0
_WHOLE_BUILTINS = (5, 11, 12)


cdef inline Py_ssize_t _right(const double* a, double x, Py_ssize_t lo, Py_ssize_t hi) noexcept:
    """bisect.bisect_right over raw doubles."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline Py_ssize_t _left(const double* a, double x, Py_ssize_t lo, Py_ssize_t hi) noexcept:
    """bisect.bisect_left over raw doubles."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline const double* _doubles(array.array values) except? NULL:
    """The raw doubles of a state array, after checking it holds doubles (the state is
    C-typed: a None or another typecode would be misread). NULL for an empty array: never
    read, as no index is below its length."""
    if values is None or values.ob_descr.typecode != b"d":
        raise TypeError("feature state arrays hold doubles (typecode 'd')")
    return values.data.as_doubles


cdef double _NAN_VALUE = math.nan


cdef inline object _nan(double value):
    """A NaN as the Python code returns it: its `math.nan` (one object, so vectors compare
    equal) where it wrote the constant; a NaN that arithmetic made (inf - inf: other bits)
    as a float of its own bits."""
    if memcmp(&value, &_NAN_VALUE, sizeof(double)) == 0:
        return _NAN
    return value


cdef Py_ssize_t* _slots(Py_ssize_t n) except NULL:
    cdef Py_ssize_t* slots = <Py_ssize_t*>PyMem_Malloc(max(n, 1) * sizeof(Py_ssize_t))
    if slots == NULL:
        raise MemoryError()
    return slots


cdef class _Entity:
    """One entity's declared windows: its bounds, its fraud windows, given bounds."""

    cdef double[:] offsets  # ascending
    cdef long long[:] given  # per offset: 0 bisect, 1 the card's 24 h bound, 2 its 30 d bound
    cdef double[:] fraud_start
    cdef double[:] fraud_end  # NaN: not lagged (frauds strictly before t)
    cdef double[:] fraud_offsets  # the distinct offsets the fraud windows bisect, ascending
    cdef long long[:] start_at  # per fraud window: its start's index in fraud_offsets
    cdef long long[:] end_at  # its end's index, or -1 when not lagged
    cdef bint any_now
    # Work space of one event (the engine is used from one thread at a time): the bound per
    # offset, the known frauds per fraud window, the bisection per fraud offset.
    cdef Py_ssize_t* bound
    cdef Py_ssize_t* known_frauds
    cdef Py_ssize_t* at

    def __cinit__(self):
        self.bound = self.known_frauds = self.at = NULL

    def __dealloc__(self):
        PyMem_Free(self.bound)
        PyMem_Free(self.known_frauds)
        PyMem_Free(self.at)

    def __init__(self, windows, dict given):
        offsets = list(windows.offsets)
        self.offsets = array.array("d", offsets)
        self.given = array.array("q", [given.get(o, 0) for o in offsets])
        spans = list(windows.fraud_windows)
        self.fraud_start = array.array("d", [s for s, _ in spans])
        self.fraud_end = array.array("d", [math.nan if e is None else e for _, e in spans])
        points = sorted({o for span in spans for o in span if o is not None})
        self.fraud_offsets = array.array("d", points)
        self.start_at = array.array("q", [points.index(s) for s, _ in spans])
        self.end_at = array.array("q", [-1 if e is None else points.index(e) for _, e in spans])
        self.any_now = any(e is None for _, e in spans)
        self.bound = _slots(len(offsets))
        self.known_frauds = _slots(len(spans))
        self.at = _slots(len(points))

    cdef void bounds(
        self, const double* ts, double t, Py_ssize_t p, Py_ssize_t s24h, Py_ssize_t s30d,
        Py_ssize_t* out,
    ) noexcept:
        """Where history up to `t - offset` ends, per offset; each below the previous."""
        cdef Py_ssize_t i, upper = p
        cdef Py_ssize_t n = self.offsets.shape[0]
        for i in range(n):
            if self.given[i] == 1:
                out[i] = s24h
            elif self.given[i] == 2:
                out[i] = s30d
            else:
                out[i] = _right(ts, t - self.offsets[i], 0, upper)
            upper = out[i]

    cdef int known(self, object frauds, object t_obj, double t, Py_ssize_t* out) except -1:
        """Known frauds per fraud window, as `VectorPlan`'s generated code counts them."""
        cdef Py_ssize_t i, n = self.fraud_start.shape[0]
        cdef Py_ssize_t* at = self.at
        cdef Py_ssize_t now = 0
        cdef array.array ft_a
        cdef const double* ft
        if n == 0:
            return 0
        ft_a = None if frauds is None else frauds.ts
        if ft_a is None or len(ft_a) == 0:
            for i in range(n):
                out[i] = 0
        elif frauds.latest_label <= t_obj:
            ft = _doubles(ft_a)
            for i in range(self.fraud_offsets.shape[0]):
                at[i] = _right(ft, t - self.fraud_offsets[i], 0, len(ft_a))
            if self.any_now:
                now = _left(ft, t, 0, len(ft_a))
            for i in range(n):
                if self.end_at[i] < 0:
                    out[i] = now - at[self.start_at[i]]
                else:
                    out[i] = at[self.end_at[i]] - at[self.start_at[i]]
        else:  # a label later than the event: count checks each label time (rare)
            for i in range(n):
                if self.end_at[i] < 0:
                    out[i] = frauds.count(t - self.fraud_start[i], t_obj, True, t_obj)
                else:
                    out[i] = frauds.count(
                        t - self.fraud_start[i], t - self.fraud_end[i], False, t_obj
                    )
        return 0


cdef class WindowVector:
    """`VectorPlan.vector`, compiled: the built-ins and the declared windows in order.

    Built from the plan (not from the declaration again), so the two read the same
    windows. A plan whose merchant windows arrive counted (the Redis store) is not
    compiled: its vector stays the plan's own.
    """

    cdef _Entity card
    cdef _Entity merchant
    cdef long long[:] op
    cdef long long[:] entity  # 0 card, 1 merchant
    cdef long long[:] first  # bound index, -1 the event's own position (p or mp)
    cdef long long[:] second
    cdef long long[:] slot  # known frauds index, or built-in index
    cdef long long[:] whole  # 1 where the Python code returns an int
    cdef array.array _scratch
    cdef double* scratch  # one vector's values (an engine is used by one thread at a time)
    cdef readonly Py_ssize_t size

    def __init__(self, plan):
        if plan.merchant.counted:
            raise ValueError("a counted plan's vector is computed by its store")
        card, merchant = plan.card, plan.merchant
        self.card = _Entity(card, {_W24H: 1, _W30D: 2})
        self.merchant = _Entity(merchant, {})
        ops, entities, firsts, seconds, slots = [], [], [], [], []
        for name, source in plan.computed:
            windows = card if source == "card" else merchant if source == "merchant" else None
            if windows is None:
                ops.append(_BUILTIN)
                entities.append(0)
                firsts.append(0)
                seconds.append(0)
                slots.append(source)
                continue
            span, kind = windows.spans[name], windows.kinds[name]
            bound = lambda o: -1 if o is None else windows.offsets.index(o)
            ops.append(kind)
            entities.append(0 if windows is card else 1)
            firsts.append(bound(span[0]) if kind != _FRAUDS else 0)
            seconds.append(bound(span[1]) if kind != _FRAUDS else 0)
            known = kind in (_FRAUDS, _RATE)
            slots.append(windows.fraud_windows.index(span) if known else 0)
        self.op = array.array("q", ops)
        self.entity = array.array("q", entities)
        self.first = array.array("q", firsts)
        self.second = array.array("q", seconds)
        self.slot = array.array("q", slots)
        self.whole = array.array("q", [
            op in (_COUNT, _FRAUDS) or (op == _BUILTIN and slot in _WHOLE_BUILTINS)
            for op, slot in zip(ops, slots)
        ])
        self.size = len(ops)
        self._scratch = array.array("d", [0.0] * max(1, self.size))
        self.scratch = self._scratch.data.as_doubles

    cdef int fill(
        self, object t_obj, double t, const double* ts, Py_ssize_t p, Py_ssize_t s24h,
        Py_ssize_t s30d, const double* cum, object card_frauds, const double* mts,
        Py_ssize_t mp, object merchant_frauds, const double* builtins, double* out,
    ) except -1:
        """The vector's values as doubles into `out` (what `as_list` makes the list of)."""
        cdef Py_ssize_t* cb = self.card.bound
        cdef Py_ssize_t* mb = self.merchant.bound
        cdef Py_ssize_t* ck = self.card.known_frauds
        cdef Py_ssize_t* mk = self.merchant.known_frauds
        cdef Py_ssize_t i, a, b, k, n, op, own
        cdef Py_ssize_t* bounds
        self.card.bounds(ts, t, p, s24h, s30d, cb)
        self.merchant.bounds(mts, t, mp, 0, 0, mb)
        self.card.known(card_frauds, t_obj, t, ck)
        self.merchant.known(merchant_frauds, t_obj, t, mk)
        for i in range(self.size):
            op = self.op[i]
            if op == _BUILTIN:
                out[i] = builtins[self.slot[i]]
                continue
            if self.entity[i] == 0:
                bounds, own = cb, p
                k = ck[self.slot[i]]
            else:
                bounds, own = mb, mp
                k = mk[self.slot[i]]
            if op == _FRAUDS:
                out[i] = k
                continue
            a = own if self.first[i] < 0 else bounds[self.first[i]]
            b = own if self.second[i] < 0 else bounds[self.second[i]]
            n = b - a
            if op == _COUNT:
                out[i] = n
            elif op == _SUM:
                out[i] = cum[b] - cum[a]
            elif op == _MEAN:
                out[i] = (cum[b] - cum[a]) / <double>n if b > a else NAN
            elif b <= a:  # _RATE
                out[i] = NAN
            elif k >= n:
                out[i] = 1.0
            else:
                out[i] = <double>k / <double>n
        return 0

    cdef list as_list(self, const double* values, object amount):
        """The list the Python code returns: counts as ints, the amount as given."""
        cdef Py_ssize_t i
        cdef list out = [None] * self.size
        for i in range(self.size):
            if self.op[i] == _BUILTIN and self.slot[i] == _AMOUNT:
                out[i] = amount
            elif self.whole[i]:
                out[i] = <Py_ssize_t>values[i]
            elif values[i] != values[i]:
                out[i] = _nan(values[i])
            else:
                out[i] = values[i]
        return out


def merchant_hour(MerchantState m, double t, bint in_order, Py_ssize_t mp):
    """`feature_engine._merchant_hour`: (start of the last hour, distinct cards in it)."""
    cdef Py_ssize_t start
    count = _merchant_hour(m, t, in_order, mp, &start)
    return start, count


cdef Py_ssize_t _distinct(list values, Py_ssize_t lo, Py_ssize_t hi, bint skip_none) except -1:
    """len(set(values[lo:hi])), None not counted if `skip_none`: for the few values of a
    card's day compared pairwise (no set, no slice), as a set would (equal is equal)."""
    cdef Py_ssize_t i, j, n = 0
    if hi - lo > 16:
        seen = set(values[lo:hi])
        if skip_none:
            seen.discard(None)
        return len(seen)
    for i in range(lo, hi):
        value = values[i]
        if skip_none and value is None:
            continue
        for j in range(lo, i):
            other = values[j]
            if other is value or other == value:
                break
        else:
            n += 1
    return n


cdef Py_ssize_t _merchant_hour(
    MerchantState m, double t, bint in_order, Py_ssize_t mp, Py_ssize_t* start_out
) except -1:
    """Distinct cards in the merchant's last hour before `mp`; where the hour starts."""
    cdef double cutoff = t - _W1H
    cdef array.array ts_a = m.ts
    cdef const double* ts = _doubles(ts_a)
    cdef list cards = m.cards
    cdef dict counts
    cdef Py_ssize_t start
    if not in_order:
        start = start_out[0] = _right(ts, cutoff, 0, mp)
        return _distinct(cards, start, mp, False)
    counts = m.window_cards
    if counts is None:  # rebuild after a late insertion
        start = _right(ts, cutoff, 0, mp)
        counts = {}
        m.window_cards = counts
        for card in cards[start:mp]:
            counts[card] = counts.get(card, 0) + 1
        m.window_start = start_out[0] = start
        return len(counts)
    start = m.window_start
    while start < mp and ts[start] <= cutoff:
        card = cards[start]
        left = counts[card] - 1
        if left:
            counts[card] = left
        else:
            del counts[card]
        start += 1
    m.window_start = start_out[0] = start
    return len(counts)


def feature_vector(
    vector, CardState card, Py_ssize_t p, object t_obj, object amount_obj, object channel,
    object device_id, double lat, double lon, object category, array.array mts,
    Py_ssize_t mp, object mf, object cards1h,
):
    """`feature_engine.feature_vector`, compiled (same arguments, same list)."""
    return _feature_vector(
        vector, card, p, t_obj, amount_obj, channel, device_id, lat, lon, category, mts, mp,
        mf, cards1h,
    )


cdef int _builtins(
    CardState card, Py_ssize_t p, object t_obj, double t, double amount, object channel,
    object device_id, double lat, double lon, object category, double cards1h,
    Py_ssize_t* s24h_out, Py_ssize_t* s30d_out, double* b,
) except -1:
    """The built-in features (BUILTIN order) into `b`, and the card's 24 h and 30 d bounds."""
    cdef array.array ts_a = card.ts
    cdef const double* ts = _doubles(ts_a)
    cdef const double* cum = _doubles(card.cum)
    cdef const double* lats
    cdef const double* lons
    cdef Py_ssize_t s24h = _right(ts, t - _W24H, 0, p)
    cdef Py_ssize_t s30d = _right(ts, t - _W30D, 0, p)
    cdef Py_ssize_t n30d = p - s30d
    cdef Py_ssize_t n24h = p - s24h
    cdef Py_ssize_t i
    cdef double avg30d, dlat, dlon, h, hours, km
    cdef list devices = card.devices
    s24h_out[0], s30d_out[0] = s24h, s30d

    avg30d = (cum[p] - cum[s30d]) / <double>n30d if n30d else NAN
    b[0] = amount
    b[1] = (t_obj // HOUR) % 24  # Python's // and %: C's differ at the edges
    b[2] = (t_obj // DAY + 3) % 7  # 1970-01-01 was a Thursday
    b[3] = NAN if channel is None else (1.0 if channel == "online" else 0.0)
    b[4] = NAN if category is None else _CATEGORY_CODE.get(category, _OTHER_CATEGORY)
    if n24h > 1:
        b[5] = _distinct(card.merchants, s24h, p, False)
    else:
        b[5] = n24h
    b[6] = (t - ts[p - 1]) / _DAY if n30d else NAN
    b[7] = amount / avg30d if n30d and avg30d > 0 else NAN

    b[8] = b[9] = NAN
    if lat == lat and lon == lon:  # not NaN
        lats, lons = _doubles(card.lat), _doubles(card.lon)
        i = p - 1
        while i >= s30d and lats[i] != lats[i]:
            i -= 1
        if i >= s30d:
            dlat = sin((lat - lats[i]) / 2)
            dlon = sin((lon - lons[i]) / 2)
            h = dlat * dlat + cos(lats[i]) * cos(lat) * dlon * dlon
            km = 2 * _EARTH_RADIUS_KM * asin(min(1.0, sqrt(h)))
            hours = (t - ts[i]) / _HOUR
            b[8] = km
            b[9] = km / (_MIN_TRAVEL_HOURS if _MIN_TRAVEL_HOURS > hours else hours)

    if device_id is None:
        b[10] = NAN
    elif p == Py_SIZE(ts_a):  # in order: the device's latest use is before this event
        last = card.device_times.get(device_id, _NEG_INF)
        b[10] = 1.0 if last > t - _W30D else 0.0
    else:
        b[10] = 1.0 if device_id in devices[s30d:p] else 0.0
    if n24h:
        b[11] = _distinct(devices, s24h, p, True)
    else:
        b[11] = 0
    b[12] = cards1h
    b[13] = 1.0 if card.fraud_reported_at <= t else 0.0
    return 0


cdef list _feature_vector(
    object vector, CardState card, Py_ssize_t p, object t_obj, object amount_obj,
    object channel, object device_id, double lat, double lon, object category,
    array.array mts, Py_ssize_t mp, object mf, object cards1h,
):
    cdef double t = t_obj
    cdef double[_N_BUILTIN] b
    cdef Py_ssize_t s24h, s30d
    cdef WindowVector plan
    _builtins(
        card, p, t_obj, t, amount_obj, channel, device_id, lat, lon, category, cards1h,
        &s24h, &s30d, b,
    )
    if type(vector) is WindowVector:
        plan = <WindowVector>vector
        plan.fill(
            t_obj, t, _doubles(card.ts), p, s24h, s30d, _doubles(card.cum), card.frauds,
            _doubles(mts), mp, mf, b, plan.scratch,
        )
        return plan.as_list(plan.scratch, amount_obj)
    builtins = [_nan(b[i]) if b[i] != b[i] else b[i] for i in range(_N_BUILTIN)]
    builtins[_AMOUNT] = amount_obj
    for i in _WHOLE_BUILTINS:
        builtins[i] = <Py_ssize_t>b[i]
    builtins[12] = cards1h  # as the store returned it
    return vector(t_obj, card.ts, p, s24h, s30d, card.cum, card.frauds, mts, mp, mf, *builtins)


cdef inline int _append(array.array values, double x) except -1:
    cdef Py_ssize_t n
    _doubles(values)  # checked before it is written
    n = Py_SIZE(values)
    array.resize_smart(values, n + 1)
    values.data.as_doubles[n] = x
    return 0


cdef class InMemoryProcess:
    """`FeatureEngine.process` for the in-memory store, compiled: the same steps in the
    same order (the Python method is the reference, and the tests compare the two). The
    rare paths (a late insertion, trimming, eviction sweeps, a conflicting retry) call the
    engine module's own Python functions, handed over by the engine."""

    # The engine's attributes (its __dict__: clock, _events, counters, last_state, ...).
    # The engine holds this object (as its `process`) and this holds the engine: a cycle,
    # freed by the cyclic collector. Held weakly, `FeatureEngine().process(...)` would
    # lose its engine before the call.
    cdef dict engine
    cdef dict cards, merchants, txns, kept
    cdef object remember_txn, keep, add, evict_idle
    cdef readonly WindowVector plan
    cdef object position, insert_card, evict_card
    cdef object insert_merchant, evict_merchant, conflict
    cdef double lateness, dedup_window, reach, trim_slack
    cdef long long evict_every

    def __init__(self, engine, dict python):
        store = engine.store
        self.engine = vars(engine)
        self.evict_idle = engine._evict_idle
        self.cards = store.table("card")
        self.merchants = store.table("merchant")
        self.txns = store.table("txn")
        self.kept = store.table("answer")
        self.remember_txn = store.adder("txn")
        self.keep = store.adder("answer")
        self.add = store.add
        self.plan = engine._vector
        self.lateness = engine._lateness
        self.dedup_window = engine._dedup_window
        self.reach = engine._reach
        self.position = python["_position"]
        self.insert_card = python["_insert_card_event"]
        self.evict_card = python["_evict_card"]
        self.insert_merchant = python["_insert_merchant_event"]
        self.evict_merchant = python["_evict_merchant"]
        self.conflict = python["conflict"]
        self.trim_slack = python["TRIM_SLACK_S"]
        self.evict_every = python["EVICT_EVERY"]

    def process(
        self, object txn_id, object t, object card_id, object merchant_id, object amount,
        object channel=None, object device_id=None, double lat=NAN, double lon=NAN,
        object category=None, object fingerprint="",
    ):
        """`FeatureEngine.process` (same parameters): the event's vector, the state updated."""
        return self._step(
            txn_id, t, card_id, merchant_id, amount, channel, device_id, lat, lon, category,
            fingerprint, NULL,
        )

    def replay(
        self, list ids, list times, list cards, list merchants, list amounts, list channels,
        list devices, list lats, list lons, list categories, list label_at,
        list label_row, list is_fraud, object apply_label, double[:, ::1] out,
        object progress, Py_ssize_t progress_every, dict shared_txns=None,
        dict shared_labels=None, object share_txn=None, object share_label=None,
    ):
        """`feature_replay.replay`'s loop: the events in order, each label applied before
        the first event at or after its arrival, each vector written to its column of `out`
        (one row per feature: the table's columns, contiguous). Returns how many labels were
        applied (the rest arrive after the last event). Before an event whose position is in
        `shared_txns`, `share_txn(position)` is called; before a label whose row is in
        `shared_labels`, `share_label(row)` (a partition's replay: feature_replay.SharedIds)."""
        cdef Py_ssize_t n = len(ids), n_labels = len(label_at), i, k, r, j = 0
        cdef Py_ssize_t size = self.plan.size
        cdef double* values = self.plan.scratch
        cdef double t
        if out.shape[0] != size or out.shape[1] != n:
            raise ValueError(f"out: needs shape ({size}, {n})")
        for i in range(n):
            t_obj = times[i]
            t = t_obj
            while j < n_labels and label_at[j] <= t_obj:
                r = label_row[j]
                if shared_labels and r in shared_labels:
                    share_label(r)
                apply_label(
                    ids[r], bool(is_fraud[r]), label_at[j], cards[r], merchants[r], times[r]
                )
                j += 1
            if shared_txns and i in shared_txns:
                share_txn(i)
            self._step(
                ids[i], t_obj, cards[i], merchants[i], amounts[i], channels[i], devices[i],
                lats[i], lons[i], categories[i], "", values,
            )
            for k in range(size):
                out[k, i] = values[k]
            if progress is not None and i % progress_every == 0:
                progress(i, n)
        return j

    cdef Py_ssize_t _place(
        self, array.array ts, list ids, double t, object t_obj, object txn_id
    ) except -1:
        """Where the event (t, txn_id) goes in an entity's history: at the end when it is
        the latest (the common case), else where `_position` finds."""
        cdef const double* times = _doubles(ts)
        cdef Py_ssize_t n = Py_SIZE(ts)
        if n and (times[n - 1] > t or (times[n - 1] == t and ids[n - 1] >= txn_id)):
            return self.position(ts, ids, t_obj, txn_id)
        return n

    cdef object _step(
        self, object txn_id, object t_obj, object card_id, object merchant_id,
        object amount_obj, object channel, object device_id, double lat, double lon,
        object category, object fingerprint, double* out,
    ):
        """One event; the vector as a list, or into `out` (then None)."""
        cdef dict engine = self.engine
        cdef object clock_obj = engine["clock"]
        cdef double t = t_obj
        cdef double amount = amount_obj
        cdef double clock, watermark, horizon
        cdef tuple seen, kept = None
        cdef bint reused, duplicate, new_card, new_merchant, slides
        cdef Py_ssize_t p, mp, n
        cdef array.array ts, cum, mts
        cdef list ids, mids
        cdef long long events
        cdef CardState card
        cdef MerchantState merchant
        cdef dict window
        cdef WindowVector plan = self.plan
        cdef double[_N_BUILTIN] b
        cdef double* values
        cdef Py_ssize_t s24h, s30d, cards1h, hour_start
        if t > <double>clock_obj:
            clock_obj = t_obj
        clock = clock_obj
        watermark = clock - self.lateness
        horizon = watermark - self.reach
        seen = self.txns.get(txn_id)
        reused = seen is not None and <double>seen[2] <= watermark - self.dedup_window
        if reused:
            seen = None  # forgotten: the id is a new payment
        if seen is not None:
            kept = self.kept.get(txn_id)
            if kept is not None and kept[0] != seen[2]:
                kept = None  # kept for an earlier payment with this id
            if kept is not None and fingerprint and kept[1] and kept[1] != fingerprint:
                self.conflict(txn_id, seen, kept[1], card_id, merchant_id, t_obj)
        duplicate = seen is not None
        engine["clock"] = clock_obj
        events = engine["_events"] + 1
        engine["_events"] = events

        card = self.cards.get(card_id)
        new_card = card is None or card.last_seen <= horizon
        if new_card:
            card = CardState()
        ts = card.ts
        ids = card.ids
        p = self._place(ts, ids, t, t_obj, txn_id)
        lat = lat * _DEG_TO_RAD  # NaN stays NaN
        lon = lon * _DEG_TO_RAD

        merchant = self.merchants.get(merchant_id)
        new_merchant = merchant is None or merchant.last_seen <= horizon
        if new_merchant:
            merchant = MerchantState()
        mts = merchant.ts
        mids = merchant.ids
        mp = self._place(mts, mids, t, t_obj, txn_id)
        slides = mp == Py_SIZE(mts) and t >= watermark and not duplicate
        cards1h = _merchant_hour(merchant, t, slides, mp, &hour_start)


        _builtins(
            card, p, t_obj, t, amount, channel, device_id, lat, lon, category, cards1h,
            &s24h, &s30d, b,
        )
        values = plan.scratch if out == NULL else out
        plan.fill(
            t_obj, t, _doubles(ts), p, s24h, s30d, _doubles(card.cum), card.frauds,
            _doubles(mts), mp, merchant.frauds, b, values,
        )
        vector = plan.as_list(values, amount_obj) if out == NULL else None

        if duplicate:
            engine["counters"]["duplicates"] += 1
            engine["last_state"] = "duplicate"
            engine["last_answer"] = None if kept is None else kept[2]
            return vector
        engine["last_answer"] = None
        self.remember_txn(txn_id, (card_id, merchant_id, t_obj), t_obj)
        if fingerprint:
            self.keep(txn_id, (t_obj, fingerprint, None), t_obj)
        elif reused:
            self.kept.pop(txn_id, None)
        if t < watermark:
            engine["counters"]["too_late"] += 1
            engine["last_state"] = "too_late"
            return vector
        engine["last_state"] = "added"
        cum = card.cum
        if p == Py_SIZE(ts):  # in order: append
            _append(ts, t)
            ids.append(txn_id)
            _append(cum, _doubles(cum)[p] + amount)
            card.merchants.append(merchant_id)
            card.devices.append(device_id)
            if device_id is not None:
                card.device_times[device_id] = t_obj
            _append(card.lat, lat)
            _append(card.lon, lon)
            if t > card.last_seen:
                card.last_seen = t
        else:
            self.insert_card(card, p, t_obj, txn_id, amount_obj, merchant_id, device_id, lat, lon)
        if _doubles(ts)[0] <= horizon - self.trim_slack:
            self.evict_card(card, horizon)
        if new_card:
            self.add("card", card_id, card, t_obj)
        if mp == Py_SIZE(mts):
            _append(mts, t)
            mids.append(txn_id)
            merchant.cards.append(card_id)
            window = merchant.window_cards
            if window is not None:
                window[card_id] = window.get(card_id, 0) + 1
            if t > merchant.last_seen:
                merchant.last_seen = t
        else:
            self.insert_merchant(merchant, mp, t_obj, txn_id, card_id)
        if _doubles(mts)[0] <= horizon - self.trim_slack:
            self.evict_merchant(merchant, horizon)
        if new_merchant:
            self.add("merchant", merchant_id, merchant, t_obj)
        if events % self.evict_every == 0:
            self.evict_idle(horizon, watermark)
        return vector
