"""Data assets (group `data`): the transaction event log and its daily statistics."""

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from sentinel_dagster.data import dataset, transaction_stats
from sentinel_dagster.data.dataset import DatasetError, SchemaError, load_transactions
from sentinel_dagster.data.transaction_stats import daily_stats, fraud_rate, scenario_counts
from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.reporting.markdown import counts_markdown, frame_markdown
from sentinel_dagster.simulation import fraud_scenarios, legit_behaviour, simulator, world
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from serving import events

_DEFAULTS = SimulationParams()


class TransactionsConfig(dg.Config):
    """Where the events come from: your own Parquet file, or the simulator."""

    source_path: str | None = Field(
        default=None,
        description="A Parquet file of your own events (DESIGN.md §3 schema). "
        "When set, the simulator parameters below are ignored.",
    )
    cards: int = Field(default=_DEFAULTS.cards, description="Simulated card holders.")
    days: int = Field(default=_DEFAULTS.days, description="Simulated days.")
    seed: int = Field(default=_DEFAULTS.seed, description="Random seed; same seed, same data.")
    fraud_rate: float = Field(default=_DEFAULTS.fraud_rate, description="Share of fraud events.")
    start: str = Field(default=_DEFAULTS.start, description="First simulated UTC day.")
    label_delay_days: float | None = Field(
        default=None,
        description="Every chargeback arrives exactly this many days after its payment; "
        "unset: a realistic spread (median ~6 days, up to 90).",
    )
    emerging_from: str | None = Field(
        default=_DEFAULTS.emerging_from,
        description="UTC date (YYYY-MM-DD) from which the emerging fraud scenario "
        "(atm_cash_out: cloned cards emptied at ATMs late at night) also runs; "
        "unset: never, as in the default data.",
    )


def _load(config: TransactionsConfig) -> tuple[pd.DataFrame, str]:
    if config.source_path:
        try:
            return load_transactions(Path(config.source_path)), config.source_path
        except (DatasetError, SchemaError) as exc:
            raise dg.Failure(description=f"{config.source_path}: {exc}") from None
    params = SimulationParams(
        cards=config.cards,
        days=config.days,
        seed=config.seed,
        fraud_rate=config.fraud_rate,
        start=config.start,
        label_delay_days=config.label_delay_days,
        emerging_from=config.emerging_from,
    )
    try:
        table = simulate_events(params)
    except ValueError as exc:
        raise dg.Failure(description=f"invalid simulator config: {exc}") from None
    return table.to_pandas(), f"simulator {params}"


# The loader, the event schema and the simulator: what `transactions` runs.
EVENT_LOG_LOGIC = (dataset, events, simulator, legit_behaviour, fraud_scenarios, world)


@dg.asset(
    group_name="data",
    io_manager_key="parquet_io_manager",
    kinds={"pandas", "parquet"},
    **catalog("data", *EVENT_LOG_LOGIC, card_data=True),
)
@timed
def transactions(config: TransactionsConfig) -> dg.Output[pd.DataFrame]:
    """The transaction event log: simulated, or your own Parquet file."""
    started = time.perf_counter()
    frame, source = _load(config)
    metadata: dict[str, Any] = {
        "source": source,
        "rows": len(frame),
        "cards": int(frame["card_id"].nunique()),
        "first_event": str(frame["event_time"].min()),
        "last_event": str(frame["event_time"].max()),
        "seconds": round(time.perf_counter() - started, 2),
        "preview": dg.MetadataValue.md(frame_markdown(frame, max_rows=5)),
    }
    rate = fraud_rate(frame)
    if rate is not None:
        metadata["fraud_rate"] = rate
    if "fraud_scenario" in frame:
        metadata["fraud_scenarios"] = dg.MetadataValue.md(
            counts_markdown(scenario_counts(frame), "scenario", "events")
        )
    return dg.Output(frame, metadata=metadata)


@dg.asset(
    group_name="data",
    io_manager_key="parquet_io_manager",
    kinds={"pandas", "parquet"},
    **catalog("data", transaction_stats),
)
@timed
def daily_transaction_stats(transactions: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """Per-day volume, amounts, active cards and fraud (with how much of it was reported)."""
    stats = daily_stats(transactions)
    return dg.Output(
        stats,
        metadata={
            "days": len(stats),
            "table": dg.MetadataValue.md(frame_markdown(stats, max_rows=62)),
        },
    )
