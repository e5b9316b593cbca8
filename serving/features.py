"""The feature set, declared once as data: name, entity, aggregation, window, lag, meaning.

The declaration drives everything downstream: the engine (`serving/feature_engine.py`)
derives what it computes from it, the offline replay is that engine, bundles carry it in
their manifest (and the service refuses a bundle whose declaration its engine does not
compute), and `docs/features.md` and the model card list it. Adding "merchant fraud rate
over 14 days, lagged by the label maturity" is one line in `FEATURES`.

The order of `FEATURES` is part of the bundle contract: a bundle's manifest lists the
names in this order and the service builds vectors in this order.

Semantics shared by all features (DESIGN.md §3):
- history is what happened *strictly before* the event, ordered by
  `(event_time, transaction_id)`; the event's own fields are used directly;
- a window `w` covers history with `event_time > t - w` (an event exactly `w` ago is out);
- a *lagged* window ends the label maturity `m` before the event: it covers history with
  `t - m - w < event_time <= t - m`, the payments whose chargebacks have had time to arrive;
- label features only use labels whose `label_time <= t`; fraud windows that are not
  lagged count frauds with `event_time < t`;
- cold start is explicit: counts and sums are 0, averages, ratios, distances and
  "time since" are NaN when there is nothing to average or compare with.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final

MINUTE: Final = 60.0
HOUR: Final = 3_600.0
DAY: Final = 86_400.0
FEATURE_SET_NAME: Final = "sentinel"
FEATURE_SET_VERSION: Final = 2  # bump when a feature is added, removed or redefined
DEFAULT_LABEL_MATURITY_DAYS: Final = 7.0


class Entity(StrEnum):
    EVENT = "event"
    CARD = "card"
    DEVICE = "device"
    MERCHANT = "merchant"


class Aggregation(StrEnum):
    VALUE = "value"  # the event's own field
    CODE = "code"  # a category's index
    COUNT = "count"  # of `of` (payments or known frauds) in the window
    SUM = "sum"  # of amounts in the window
    MEAN = "mean"  # of amounts in the window
    RATE = "rate"  # known frauds / payments in the window, capped at 1
    DISTINCT = "distinct"
    SINCE = "since"
    RATIO = "ratio"
    DISTANCE = "distance"
    SPEED = "speed"
    FLAG = "flag"


class Of(StrEnum):
    """What an aggregation is taken over."""

    EVENT = "event"
    PAYMENTS = "payments"
    AMOUNT = "amount"
    FRAUDS = "frauds"  # payments with a fraud label known at the event's time
    MERCHANTS = "merchants"
    CARDS = "cards"
    DEVICES = "devices"
    LOCATION = "location"


# The aggregations any card or merchant window computes, for any width and lag; the others
# are the engine's built-in features, each computed exactly as declared below.
WINDOWED: Final = frozenset(
    {
        (Aggregation.COUNT, Of.PAYMENTS),
        (Aggregation.COUNT, Of.FRAUDS),
        (Aggregation.SUM, Of.AMOUNT),
        (Aggregation.MEAN, Of.AMOUNT),
        (Aggregation.RATE, Of.FRAUDS),
    }
)


@dataclass(frozen=True)
class Feature:
    name: str
    entity: Entity
    window_s: float | None  # None: the event itself, or all retained history
    aggregation: Aggregation
    meaning: str
    of: Of = Of.PAYMENTS
    lagged: bool = False  # the window ends the label maturity before the event
    group: str = ""  # the kind of signal, for ablation tables and docs

    @property
    def windowed(self) -> bool:
        return self.entity in (Entity.CARD, Entity.MERCHANT) and (
            (self.aggregation, self.of) in WINDOWED
        )

    @property
    def uses_labels(self) -> bool:
        return self.of is Of.FRAUDS or self.name == "card_has_reported_fraud"


# Known merchant categories; anything else encodes as OTHER_CATEGORY, a missing one as NaN.
MERCHANT_CATEGORIES: Final[tuple[str, ...]] = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "pharmacy",
    "travel",
    "subscriptions",
    "online_marketplace",
    "electronics",
    "jewelry",
    "gift_cards",
    "digital_goods",
    "atm",
)
OTHER_CATEGORY: Final = float(len(MERCHANT_CATEGORIES))

_E, _C, _D, _M = Entity.EVENT, Entity.CARD, Entity.DEVICE, Entity.MERCHANT
_VALUE, _CODE, _COUNT, _SUM, _MEAN, _RATE = (
    Aggregation.VALUE, Aggregation.CODE, Aggregation.COUNT, Aggregation.SUM, Aggregation.MEAN,
    Aggregation.RATE,
)  # fmt: skip
_EVENT_FIELDS, _CARD_WINDOWS, _CARD_LABELS = "event fields", "card windows", "card labels"
_DEVICE_GEO, _MERCHANT, _MERCHANT_LABELS = "device and geo", "merchant activity", "merchant labels"


def _event(name: str, aggregation: Aggregation, meaning: str) -> Feature:
    return Feature(name, _E, None, aggregation, meaning, Of.EVENT, group=_EVENT_FIELDS)


def _card(name: str, window_s: float, aggregation: Aggregation, of: Of, meaning: str) -> Feature:
    return Feature(name, _C, window_s, aggregation, meaning, of, group=_CARD_WINDOWS)


def _merchant_lagged(days: int) -> tuple[Feature, ...]:
    """Payments, known frauds and their rate at the merchant over `days`, lagged."""
    window, d = days * DAY, f"{days}d"
    period = f"the {days} day{'s' if days > 1 else ''} ending label maturity before the payment"
    return (
        Feature(f"merchant_txn_count_{d}_lagged", _M, window, _COUNT,
                f"payments at the merchant in {period}", Of.PAYMENTS, True, _MERCHANT_LABELS),
        Feature(f"merchant_fraud_count_{d}_lagged", _M, window, _COUNT,
                f"known frauds among the merchant's payments in {period}", Of.FRAUDS, True,
                _MERCHANT_LABELS),
        Feature(f"merchant_fraud_rate_{d}_lagged", _M, window, _RATE,
                f"known frauds / payments at the merchant in {period} (NaN if none)",
                Of.FRAUDS, True, _MERCHANT_LABELS),
    )  # fmt: skip


# fmt: off
FEATURES: Final[tuple[Feature, ...]] = (
    # The event's own fields.
    _event("amount", _VALUE, "amount of this payment"),
    _event("hour_of_day", _VALUE, "UTC hour of event_time, 0-23"),
    _event("day_of_week", _VALUE, "UTC weekday of event_time, 0 = Monday"),
    _event("channel_online", _VALUE, "1 online, 0 pos or atm, NaN unknown"),
    _event(
        "merchant_category_code",
        _CODE,
        "index in MERCHANT_CATEGORIES, OTHER_CATEGORY if unknown, NaN if missing",
    ),
    # Card velocity and profile.
    _card("txn_count_10m", 10 * MINUTE, _COUNT, Of.PAYMENTS,
          "card payments in the last 10 minutes"),
    _card("txn_count_1h", HOUR, _COUNT, Of.PAYMENTS, "card payments in the last hour"),
    _card("txn_count_24h", DAY, _COUNT, Of.PAYMENTS, "card payments in the last 24 hours"),
    _card("amount_sum_1h", HOUR, _SUM, Of.AMOUNT, "amount spent on the card in the last hour"),
    _card("amount_sum_24h", DAY, _SUM, Of.AMOUNT, "amount spent on the card in the last 24 hours"),
    _card(
        "distinct_merchants_24h", DAY, Aggregation.DISTINCT, Of.MERCHANTS,
        "merchants the card paid in the last 24h",
    ),
    _card(
        "days_since_last_txn", 30 * DAY, Aggregation.SINCE, Of.PAYMENTS,
        "days since the card's previous payment",
    ),
    _card("avg_amount_7d", 7 * DAY, _MEAN, Of.AMOUNT, "mean card payment over 7 days"),
    _card("avg_amount_30d", 30 * DAY, _MEAN, Of.AMOUNT, "mean card payment over 30 days"),
    _card(
        "amount_to_avg_30d", 30 * DAY, Aggregation.RATIO, Of.AMOUNT,
        "this amount / avg_amount_30d (NaN if none)",
    ),
    # Geography: impossible travel.
    Feature(
        "km_from_last_txn", _C, 30 * DAY, Aggregation.DISTANCE,
        "km from the card's latest earlier located payment", Of.LOCATION, group=_DEVICE_GEO,
    ),
    Feature(
        "speed_kmh_from_last_txn", _C, 30 * DAY, Aggregation.SPEED,
        "km_from_last_txn / hours since that payment (at least one minute)", Of.LOCATION,
        group=_DEVICE_GEO,
    ),
    # Devices.
    Feature(
        "device_seen_before_30d", _D, 30 * DAY, Aggregation.FLAG,
        "1 if the card used this device in the last 30 days, 0 if not, NaN if no device",
        Of.DEVICES, group=_DEVICE_GEO,
    ),
    Feature(
        "distinct_devices_24h", _D, DAY, Aggregation.DISTINCT,
        "devices the card used in the last 24 hours", Of.DEVICES, group=_DEVICE_GEO,
    ),
    # Merchant activity.
    Feature(
        "merchant_txn_count_1h", _M, HOUR, _COUNT, "payments at the merchant in the last hour",
        group=_MERCHANT,
    ),
    Feature(
        "merchant_distinct_cards_1h", _M, HOUR, Aggregation.DISTINCT,
        "cards paying at the merchant, last hour", Of.CARDS, group=_MERCHANT,
    ),
    # Label feedback: only labels known (label_time <= t).
    Feature(
        "merchant_fraud_count_7d", _M, 7 * DAY, _COUNT,
        "known frauds among the merchant's payments of the last 7 days", Of.FRAUDS,
        group=_MERCHANT_LABELS,
    ),
    Feature(
        "merchant_fraud_rate_30d", _M, 30 * DAY, _RATE,
        "known frauds / payments at the merchant over 30 days (NaN if no payments)", Of.FRAUDS,
        group=_MERCHANT_LABELS,
    ),
    Feature(
        "card_has_reported_fraud", _C, None, Aggregation.FLAG,
        "1 if a fraud on this card has been reported (kept while the card is active)",
        Of.FRAUDS, group=_CARD_LABELS,
    ),
    # Added in feature set v2: longer card windows, and merchant label windows lagged by the
    # label maturity so that their payments have had time to be reported.
    _card("txn_count_7d", 7 * DAY, _COUNT, Of.PAYMENTS, "card payments in the last 7 days"),
    _card("txn_count_30d", 30 * DAY, _COUNT, Of.PAYMENTS, "card payments in the last 30 days"),
    _card("avg_amount_1d", DAY, _MEAN, Of.AMOUNT, "mean card payment over the last 24 hours"),
    Feature(
        "card_fraud_count_30d_lagged", _C, 30 * DAY, _COUNT,
        "known frauds among the card's payments in the 30 days ending label maturity before "
        "the payment", Of.FRAUDS, True, _CARD_LABELS,
    ),
    *_merchant_lagged(1),
    *_merchant_lagged(7),
    *_merchant_lagged(30),
)
# fmt: on

FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}
LABEL_FEATURES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES if f.uses_labels)
# The seed's seven features keep the seed's names and meanings.
SEED_FEATURES: Final[tuple[str, ...]] = (
    "amount",
    "hour_of_day",
    "days_since_last_txn",
    "txn_count_24h",
    "distinct_merchants_24h",
    "avg_amount_7d",
    "channel_online",
)


def feature_groups() -> dict[str, tuple[str, ...]]:
    """Features by the kind of signal they carry, for ablation tables and docs."""
    groups: dict[str, list[str]] = {}
    for feature in FEATURES:
        groups.setdefault(feature.group, []).append(feature.name)
    return {name: tuple(names) for name, names in groups.items()}


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned list of features and the label maturity its lagged windows use."""

    features: tuple[Feature, ...] = FEATURES
    label_maturity_days: float = DEFAULT_LABEL_MATURITY_DAYS
    name: str = FEATURE_SET_NAME
    version: int = FEATURE_SET_VERSION

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def label_maturity_s(self) -> float:
        return self.label_maturity_days * DAY

    def window(self, feature: Feature) -> tuple[float, float | None]:
        """(start, end) offsets of a feature's window: it covers history with
        `t - start < event_time <= t - end`, or strictly before the event when end is None
        (not lagged, or a lag of 0: an event never counts its own label)."""
        width = feature.window_s or 0.0
        lag = self.label_maturity_s if feature.lagged else 0.0
        return (width + lag, lag) if lag > 0 else (width, None)

    def longest_reach_s(self) -> float:
        """How far back any feature looks: state older than this is never read."""
        return max(self.window(f)[0] for f in self.features)

    def declaration(self) -> dict[str, Any]:
        """The JSON form carried in every bundle's manifest."""
        return {
            "name": self.name,
            "version": self.version,
            "label_maturity_days": self.label_maturity_days,
            "features": [
                {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(f).items()}
                for f in self.features
            ],
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.declaration(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def feature_set_from_declaration(declaration: Any) -> FeatureSet:
    """The inverse of `FeatureSet.declaration`; ValueError naming what is malformed."""
    try:
        features = tuple(
            Feature(
                name=str(f["name"]),
                entity=Entity(f["entity"]),
                window_s=None if f["window_s"] is None else float(f["window_s"]),
                aggregation=Aggregation(f["aggregation"]),
                meaning=str(f["meaning"]),
                of=Of(f["of"]),
                lagged=bool(f["lagged"]),
                group=str(f["group"]),
            )
            for f in declaration["features"]
        )
        return FeatureSet(
            features,
            float(declaration["label_maturity_days"]),
            str(declaration["name"]),
            int(declaration["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed feature set declaration: {exc!r}") from None


DEFAULT_FEATURE_SET: Final = FeatureSet()


def _window_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    for unit, size in (("d", DAY), ("h", HOUR), ("min", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def markdown_table(feature_set: FeatureSet = DEFAULT_FEATURE_SET) -> str:
    """The feature table of docs/features.md and of every model card, from the declaration."""
    lag = f"{feature_set.label_maturity_days:g} d"
    rows = [
        "| # | feature | entity | window | lagged by | aggregation | of | meaning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {i} | `{f.name}` | {f.entity} | {_window_text(f.window_s)} | "
        f"{lag if f.lagged else '—'} | {f.aggregation} | {f.of} | {f.meaning} |"
        for i, f in enumerate(feature_set.features)
    ]
    return "\n".join(rows)


if __name__ == "__main__":  # `python -m serving.features` prints the table for the docs
    print(markdown_table())
