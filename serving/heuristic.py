"""The heuristic fallback: fraud rules on the same resolved features the model sees.

Used when the model misses its deadline (circuit breaker) and as the baseline every
candidate model is evaluated against. Each fired rule adds its weight to a log-odds score,
so the answer is a probability like the model's, and the fired rules are the reasons.
Plain Python over a handful of features: a few microseconds, no model file, cannot fail.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from serving.features import FEATURE_INDEX, MERCHANT_CATEGORIES

BASE_LOG_ODDS = -5.0  # ~0.7% with no rule fired, about the base fraud rate
# With no model loaded there is no model threshold: decline when the rules say fraud is
# more likely than not (fired rules weighing at least -BASE_LOG_ODDS).
HEURISTIC_ONLY_THRESHOLD = 0.5
HIGH_RISK_CATEGORIES = frozenset(
    float(MERCHANT_CATEGORIES.index(c))
    for c in ("electronics", "jewelry", "gift_cards", "digital_goods")
)
# Feature positions, resolved once: the rules run for every scored event.
_TXN_10M, _TXN_1H, _AMOUNT, _RATIO_30D, _AVG_30D, _KM, _SPEED, _DEVICE_SEEN, _ONLINE = (
    FEATURE_INDEX[name]
    for name in (
        "txn_count_10m", "txn_count_1h", "amount", "amount_to_avg_30d", "avg_amount_30d",
        "km_from_last_txn", "speed_kmh_from_last_txn", "device_seen_before_30d",
        "channel_online",
    )
)  # fmt: skip
# What a caller of the earlier system sends (its seven precomputed features) can show too.
_TXN_24H, _MERCHANTS_24H, _AVG_7D, _HOUR = (
    FEATURE_INDEX[name]
    for name in ("txn_count_24h", "distinct_merchants_24h", "avg_amount_7d", "hour_of_day")
)
NIGHT_HOURS = 4.0  # hour_of_day 0-4 (UTC for raw events; as given in a precomputed request)
_M_FRAUD_7D, _M_FRAUD_RATE, _CARD_FRAUD, _CATEGORY = (
    FEATURE_INDEX[name]
    for name in (
        "merchant_fraud_count_7d", "merchant_fraud_rate_30d", "card_has_reported_fraud",
        "merchant_category_code",
    )
)  # fmt: skip


@dataclass(frozen=True)
class HeuristicResult:
    probability: float
    reasons: tuple[str, ...]  # fired rules, strongest first


def _rules(v: Sequence[float]) -> list[tuple[float, str]]:
    """(weight, reason) of every rule that fires; NaN comparisons are simply False."""
    amount = v[_AMOUNT]
    fired = []
    if v[_TXN_10M] >= 3:
        fired.append((2.5, "card_velocity_10m"))
    elif v[_TXN_1H] >= 6:
        fired.append((1.5, "card_velocity_1h"))
    elif v[_TXN_24H] >= 10:
        fired.append((1.5, "card_velocity_24h"))
    if v[_MERCHANTS_24H] >= 6:
        fired.append((1.0, "merchant_spread_24h"))
    if amount < 5.0 and v[_TXN_10M] >= 2:
        fired.append((2.0, "small_amount_burst"))  # card testing
    if v[_RATIO_30D] >= 4.0:
        fired.append((2.0, "amount_far_above_profile"))
    elif amount >= 4.0 * v[_AVG_7D]:  # the 7-day average only (e.g. as a caller sends it)
        fired.append((1.5, "amount_far_above_7d_average"))
    elif math.isnan(v[_AVG_30D]) and amount >= 500.0:
        fired.append((1.0, "large_amount_no_history"))
    if v[_HOUR] <= NIGHT_HOURS:
        if v[_ONLINE] == 1.0:
            fired.append((1.5, "night_online"))
        else:
            fired.append((0.75, "night_time"))
    if v[_SPEED] > 900.0 and v[_KM] > 300.0:
        fired.append((2.5, "impossible_travel"))
    if v[_DEVICE_SEEN] == 0.0 and v[_ONLINE] == 1.0:
        fired.append((1.5, "new_device_online"))
    if v[_M_FRAUD_7D] >= 2 or v[_M_FRAUD_RATE] > 0.02:
        fired.append((1.0, "risky_merchant"))
    if v[_CARD_FRAUD] == 1.0:
        fired.append((1.5, "card_reported_fraud"))
    if v[_CATEGORY] in HIGH_RISK_CATEGORIES and amount >= 200.0:
        fired.append((1.0, "high_risk_category_large_amount"))
    return fired


def heuristic_score(vector: Sequence[float]) -> HeuristicResult:
    """Probability and reasons for one feature vector in FEATURE_NAMES order."""
    fired = _rules(vector)
    if not fired:  # the usual case
        return _NOTHING_FIRED
    fired.sort(reverse=True)
    log_odds = BASE_LOG_ODDS + sum(weight for weight, _ in fired)
    return HeuristicResult(1.0 / (1.0 + math.exp(-log_odds)), tuple(r for _, r in fired))


_NOTHING_FIRED = HeuristicResult(1.0 / (1.0 + math.exp(-BASE_LOG_ODDS)), ())
