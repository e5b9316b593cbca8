"""Every model feature, defined once: name, entity, window, aggregation and meaning.

The order of `FEATURES` is part of the bundle contract: a bundle's manifest lists the
names in this order and the service builds vectors in this order.

Semantics shared by all features (DESIGN.md §3):
- history is what happened *strictly before* the event, ordered by
  `(event_time, transaction_id)`; the event's own fields are used directly;
- a window `w` covers history with `event_time > t - w` (an event exactly `w` ago is out);
- label features only use labels whose `label_time <= t`;
- cold start is explicit: counts and sums are 0, averages, ratios, distances and
  "time since" are NaN when there is nothing to average or compare with.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

MINUTE: Final = 60.0
HOUR: Final = 3_600.0
DAY: Final = 86_400.0


class Entity(StrEnum):
    EVENT = "event"
    CARD = "card"
    DEVICE = "device"
    MERCHANT = "merchant"


@dataclass(frozen=True)
class Feature:
    name: str
    entity: Entity
    window_s: float | None  # None: the event itself, or all retained history
    aggregation: str
    meaning: str


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
FEATURES: Final[tuple[Feature, ...]] = (
    # The event's own fields.
    Feature("amount", _E, None, "value", "amount of this payment"),
    Feature("hour_of_day", _E, None, "value", "UTC hour of event_time, 0-23"),
    Feature("day_of_week", _E, None, "value", "UTC weekday of event_time, 0 = Monday"),
    Feature("channel_online", _E, None, "value", "1 online, 0 pos or atm, NaN unknown"),
    Feature(
        "merchant_category_code",
        _E,
        None,
        "code",
        "index in MERCHANT_CATEGORIES, OTHER_CATEGORY if unknown, NaN if missing",
    ),
    # Card velocity and profile.
    Feature("txn_count_10m", _C, 10 * MINUTE, "count", "card payments in the last 10 minutes"),
    Feature("txn_count_1h", _C, HOUR, "count", "card payments in the last hour"),
    Feature("txn_count_24h", _C, DAY, "count", "card payments in the last 24 hours"),
    Feature("amount_sum_1h", _C, HOUR, "sum", "amount spent on the card in the last hour"),
    Feature("amount_sum_24h", _C, DAY, "sum", "amount spent on the card in the last 24 hours"),
    Feature(
        "distinct_merchants_24h", _C, DAY, "distinct", "merchants the card paid in the last 24h"
    ),
    Feature("days_since_last_txn", _C, 30 * DAY, "since", "days since the card's previous payment"),
    Feature("avg_amount_7d", _C, 7 * DAY, "mean", "mean card payment over 7 days"),
    Feature("avg_amount_30d", _C, 30 * DAY, "mean", "mean card payment over 30 days"),
    Feature(
        "amount_to_avg_30d", _C, 30 * DAY, "ratio", "this amount / avg_amount_30d (NaN if none)"
    ),
    # Geography: impossible travel.
    Feature(
        "km_from_last_txn",
        _C,
        30 * DAY,
        "distance",
        "km from the card's latest earlier located payment",
    ),
    Feature(
        "speed_kmh_from_last_txn",
        _C,
        30 * DAY,
        "speed",
        "km_from_last_txn / hours since that payment (at least one minute)",
    ),
    # Devices.
    Feature(
        "device_seen_before_30d",
        _D,
        30 * DAY,
        "flag",
        "1 if the card used this device in the last 30 days, 0 if not, NaN if no device",
    ),
    Feature(
        "distinct_devices_24h", _D, DAY, "distinct", "devices the card used in the last 24 hours"
    ),
    # Merchant activity.
    Feature(
        "merchant_txn_count_1h", _M, HOUR, "count", "payments at the merchant in the last hour"
    ),
    Feature(
        "merchant_distinct_cards_1h",
        _M,
        HOUR,
        "distinct",
        "cards paying at the merchant, last hour",
    ),
    # Label feedback: only labels known (label_time <= t).
    Feature(
        "merchant_fraud_count_7d",
        _M,
        7 * DAY,
        "count",
        "known frauds among the merchant's payments of the last 7 days",
    ),
    Feature(
        "merchant_fraud_rate_30d",
        _M,
        30 * DAY,
        "rate",
        "known frauds / payments at the merchant over 30 days (NaN if no payments)",
    ),
    Feature(
        "card_has_reported_fraud",
        _C,
        None,
        "flag",
        "1 if a fraud on this card has been reported (kept while the card is active)",
    ),
)

FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}
LABEL_FEATURES: Final[tuple[str, ...]] = (
    "merchant_fraud_count_7d",
    "merchant_fraud_rate_30d",
    "card_has_reported_fraud",
)
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
LONGEST_WINDOW_S: Final = max(f.window_s or 0.0 for f in FEATURES)
