"""Checks on the feature table: value sanity and a leakage probe.

The probe recomputes the label features of sampled rows by brute force from the raw event
log — a second, independent implementation in pandas — and flags any row where the engine
used a label that was not yet known at the event's time.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serving.features import DAY, FEATURES

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


def leakage_probe(
    log: pd.DataFrame, table: pd.DataFrame, sample: int = 2_000, seed: int = 0
) -> CheckOutcome:
    """Brute-force the label features of sampled rows and compare with the engine's.

    Rows are sampled where leakage could show: at cards and merchants that have frauds.
    `merchant_fraud_count_7d` must match exactly; `card_has_reported_fraud` may be 1 only if
    a fraud on the card was reported at or before the event (the engine forgets a card idle
    for 30 days, so it may say 0 where the full history says 1 — never the reverse).
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
    week = pd.Timedelta(seconds=7 * DAY)
    violations = []
    columns = ["transaction_id", "event_time", "card_id", "merchant_id"]
    columns += ["card_has_reported_fraud", "merchant_fraud_count_7d"]
    for txn, t, card_id, merchant_id, card_flag, merchant_count in rows[columns].itertuples(
        index=False, name=None
    ):
        card = by_card.get(card_id)
        known_on_card = card is not None and bool((card["label_time"] <= t).any())
        if card_flag == 1.0 and not known_on_card:
            violations.append(f"{txn}: card flag set before any report")
        shop = by_merchant.get(merchant_id)
        expected = 0
        if shop is not None:
            window = (shop["event_time"] > t - week) & (shop["event_time"] < t)
            expected = int((window & (shop["label_time"] <= t)).sum())
        if merchant_count != expected:
            violations.append(
                f"{txn}: merchant_fraud_count_7d {merchant_count:g} but {expected} were known"
            )
    return CheckOutcome(
        "no_label_leakage",
        not violations,
        f"{len(rows):,} rows probed at cards and merchants with frauds; "
        f"{len(violations)} disagreed with the brute-force recomputation",
        violations[:10],
    )
