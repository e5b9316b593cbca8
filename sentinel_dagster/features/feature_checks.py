"""Checks on the feature table: value sanity and a leakage probe.

The probe recomputes the label features of sampled rows by brute force from the raw event
log — a second, independent implementation in pandas — and flags any row where the engine
used a label that was not yet known at the event's time.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serving.features import (
    DEFAULT_FEATURE_SET,
    FEATURES,
    Aggregation,
    Entity,
    FeatureSet,
    Of,
)

COUNT_AGGREGATIONS = {"count", "distinct", "sum"}
UNIT_INTERVAL_AGGREGATIONS = {"rate", "flag"}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    detail: str
    examples: list[str] = field(default_factory=list)


def sanity_outcomes(table: pd.DataFrame) -> list[CheckOutcome]:
    """No infinities anywhere; counts and sums >= 0; rates and flags within [0, 1]."""
    outcomes = []
    values = table[[f.name for f in FEATURES]].to_numpy(dtype="float64")
    infinite = [f.name for f, col in zip(FEATURES, values.T, strict=True) if np.isinf(col).any()]
    outcomes.append(
        CheckOutcome("no_infinities", not infinite, f"infinite values in: {infinite or 'none'}")
    )
    negative = [
        f.name
        for f in FEATURES
        if f.aggregation in COUNT_AGGREGATIONS and (table[f.name] < 0).any()
    ]
    outcomes.append(
        CheckOutcome("counts_non_negative", not negative, f"negative in: {negative or 'none'}")
    )
    outside = [
        f.name
        for f in FEATURES
        if f.aggregation in UNIT_INTERVAL_AGGREGATIONS
        and ((table[f.name] < 0) | (table[f.name] > 1)).any()
    ]
    outcomes.append(
        CheckOutcome("rates_in_unit_interval", not outside, f"outside [0, 1]: {outside or 'none'}")
    )
    return outcomes


def _known_frauds(log: pd.DataFrame) -> pd.DataFrame:
    if "label_time" not in log or "is_fraud" not in log:
        return log.iloc[0:0][["card_id", "merchant_id", "event_time"]].assign(label_time=None)
    frauds = log[(log["is_fraud"] == 1) & log["label_time"].notna()]
    return frauds[["card_id", "merchant_id", "event_time", "label_time"]]


def _merchant_fraud_windows(features: FeatureSet) -> list[tuple[str, float, float | None]]:
    """(name, start offset, end offset) of every declared merchant known-fraud count."""
    return [
        (f.name, *features.window(f))
        for f in features.features
        if f.entity is Entity.MERCHANT and f.aggregation is Aggregation.COUNT and f.of is Of.FRAUDS
    ]


def leakage_probe(
    log: pd.DataFrame,
    table: pd.DataFrame,
    features: FeatureSet = DEFAULT_FEATURE_SET,
    sample: int = 2_000,
    seed: int = 0,
) -> CheckOutcome:
    """Brute-force the label features of sampled rows and compare with the engine's.

    Rows are sampled where leakage could show: at cards and merchants that have frauds.
    Every declared merchant known-fraud count (`merchant_fraud_count_7d`, the lagged ones)
    must match exactly: frauds at the merchant in its window whose label_time <= t. A window
    that is not lagged ends strictly before t. `card_has_reported_fraud` may be 1 only if a
    fraud on the card was reported at or before the event (the engine forgets a card idle
    for longer than its reach, so it may say 0 where the full history says 1, never the
    reverse).
    """
    frauds = _known_frauds(log)
    if frauds.empty:
        return CheckOutcome("no_label_leakage", True, "no labels in the data: nothing to leak")
    at_risk = table[
        table["card_id"].isin(frauds["card_id"]) | table["merchant_id"].isin(frauds["merchant_id"])
    ]
    rows = at_risk.sample(min(sample, len(at_risk)), random_state=seed)
    by_card = {k: g for k, g in frauds.groupby("card_id")}
    by_merchant = {k: g for k, g in frauds.groupby("merchant_id")}
    windows = _merchant_fraud_windows(features)
    violations = []
    columns = ["transaction_id", "event_time", "card_id", "merchant_id"]
    columns += ["card_has_reported_fraud", *(name for name, _, _ in windows)]
    for txn, t, card_id, merchant_id, card_flag, *counts in rows[columns].itertuples(
        index=False, name=None
    ):
        card = by_card.get(card_id)
        known_on_card = card is not None and bool((card["label_time"] <= t).any())
        if card_flag == 1.0 and not known_on_card:
            violations.append(f"{txn}: card flag set before any report")
        shop = by_merchant.get(merchant_id)
        for (name, start, end), count in zip(windows, counts, strict=True):
            expected = 0
            if shop is not None:
                times = shop["event_time"]
                after = times > t - pd.Timedelta(seconds=start)
                until = times < t if end is None else times <= t - pd.Timedelta(seconds=end)
                expected = int((after & until & (shop["label_time"] <= t)).sum())
            if count != expected:
                violations.append(f"{txn}: {name} {count:g} but {expected} were known")
    return CheckOutcome(
        "no_label_leakage",
        not violations,
        f"{len(rows):,} rows probed at cards and merchants with frauds; "
        f"{len(violations)} disagreed with the brute-force recomputation",
        violations[:10],
    )
