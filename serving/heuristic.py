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
HIGH_RISK_CATEGORIES = frozenset(
    float(MERCHANT_CATEGORIES.index(c))
    for c in ("electronics", "jewelry", "gift_cards", "digital_goods")
)
_I = FEATURE_INDEX


@dataclass(frozen=True)
class HeuristicResult:
    probability: float
    reasons: list[str]  # fired rules, strongest first


def _value(vector: Sequence[float], name: str) -> float:
    return vector[_I[name]]


def _rules(v: Sequence[float]) -> list[tuple[float, str]]:
    """(weight, reason) of every rule that fires; NaN comparisons are simply False."""
    amount = _value(v, "amount")
    fired = []
    if _value(v, "txn_count_10m") >= 3:
        fired.append((2.5, "card_velocity_10m"))
    elif _value(v, "txn_count_1h") >= 6:
        fired.append((1.5, "card_velocity_1h"))
    if amount < 5.0 and _value(v, "txn_count_10m") >= 2:
        fired.append((2.0, "small_amount_burst"))  # card testing
    if _value(v, "amount_to_avg_30d") >= 4.0:
        fired.append((2.0, "amount_far_above_profile"))
    elif math.isnan(_value(v, "avg_amount_30d")) and amount >= 500.0:
        fired.append((1.0, "large_amount_no_history"))
    if _value(v, "speed_kmh_from_last_txn") > 900.0 and _value(v, "km_from_last_txn") > 300.0:
        fired.append((2.5, "impossible_travel"))
    if _value(v, "device_seen_before_30d") == 0.0 and _value(v, "channel_online") == 1.0:
        fired.append((1.5, "new_device_online"))
    if _value(v, "merchant_fraud_count_7d") >= 2 or _value(v, "merchant_fraud_rate_30d") > 0.02:
        fired.append((1.0, "risky_merchant"))
    if _value(v, "card_has_reported_fraud") == 1.0:
        fired.append((1.5, "card_reported_fraud"))
    if _value(v, "merchant_category_code") in HIGH_RISK_CATEGORIES and amount >= 200.0:
        fired.append((1.0, "high_risk_category_large_amount"))
    return fired


def heuristic_score(vector: Sequence[float]) -> HeuristicResult:
    """Probability and reasons for one feature vector in FEATURE_NAMES order."""
    fired = sorted(_rules(vector), reverse=True)
    log_odds = BASE_LOG_ODDS + sum(weight for weight, _ in fired)
    return HeuristicResult(1.0 / (1.0 + math.exp(-log_odds)), [reason for _, reason in fired])
