"""Summaries of a transactions frame: the asset metadata and the daily statistics table."""

import pandas as pd

from serving.events import SCENARIOS


def scenario_counts(frame: pd.DataFrame) -> dict[str, int]:
    if "fraud_scenario" not in frame:
        return {}
    counts = frame["fraud_scenario"].value_counts()
    return {name: int(counts.get(name, 0)) for name in SCENARIOS}


def fraud_rate(frame: pd.DataFrame) -> float | None:
    if "is_fraud" not in frame or len(frame) == 0:
        return None
    return float(frame["is_fraud"].mean())


def daily_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per UTC day: volume, amounts, cards, and frauds with how many were reported."""
    day = frame["event_time"].dt.floor("D").rename("day")
    grouped = frame.groupby(day)
    stats = pd.DataFrame(
        {
            "transactions": grouped.size(),
            "amount_sum": grouped["amount"].sum(),
            "amount_median": grouped["amount"].median(),
            "active_cards": grouped["card_id"].nunique(),
        }
    )
    if "is_fraud" in frame:
        stats["frauds"] = grouped["is_fraud"].sum().astype("int64")
        stats["fraud_rate"] = stats["frauds"] / stats["transactions"]
    if "label_time" in frame:
        stats["frauds_reported"] = grouped["label_time"].count().astype("int64")
    return stats.reset_index()
