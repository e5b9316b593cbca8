"""The transaction-stream simulator: a realistic, labelled, deterministic event log.

Same parameters, same bytes: one seeded generator is consumed in a fixed order, and the
Parquet file is written with fixed settings.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sentinel_dagster.data.dataset import write_parquet
from sentinel_dagster.simulation import fraud_scenarios as fs
from sentinel_dagster.simulation.events_table import Events, to_arrow
from sentinel_dagster.simulation.legit_behaviour import legit_events
from sentinel_dagster.simulation.simulation_params import SimulationParams
from sentinel_dagster.simulation.world import SECONDS_PER_DAY, build_cards, build_merchants
from serving.events import SCENARIOS

Progress = Callable[[float, str], None]  # (fraction done, what is happening)
CARDS_PER_CHUNK = 2_000


@dataclass(frozen=True)
class SimulationSummary:
    rows: int
    fraud_rate: float
    scenario_counts: dict[str, int]
    reported_share: float  # share of frauds whose label ever arrives
    seconds: float

    def one_line(self) -> str:
        scenarios = ", ".join(f"{k}={v}" for k, v in self.scenario_counts.items())
        return (
            f"{self.rows:,} rows, fraud rate {self.fraud_rate:.2%} ({scenarios}), "
            f"{self.reported_share:.0%} of frauds reported, {self.seconds:.1f}s"
        )


def _no_progress(fraction: float, stage: str) -> None:
    pass


def simulate_events(params: SimulationParams, progress: Progress = _no_progress) -> pa.Table:
    """The event log as an Arrow table, sorted by (event_time, transaction_id)."""
    params.validate()
    rng = np.random.default_rng(params.seed)
    start = params.start_epoch()
    end = start + params.days * SECONDS_PER_DAY
    progress(0.0, "building merchants and card holders")
    merchants = build_merchants(rng, max(300, params.cards // 4))
    cards = build_cards(rng, params.cards, merchants, start, params.days, params.mean_daily_rate)

    parts = []
    for first in range(0, params.cards, CARDS_PER_CHUNK):
        ids = np.arange(first, min(first + CARDS_PER_CHUNK, params.cards))
        parts.append(legit_events(rng, cards, merchants, ids, start, params.days))
        progress(0.8 * (first + len(ids)) / params.cards, "card-holder payments")
    legit = Events.concat(parts)

    progress(0.8, "fraud scenarios")
    emerging = params.emerging_epoch()
    first_emerging = start if emerging is None else max(emerging, start)
    emerging_part = 0.0 if emerging is None else (end - first_emerging) / (end - start)
    counts = fs.incident_counts(len(legit), params.fraud_rate, emerging_part)
    latest_start = max(end - SECONDS_PER_DAY // 2, start + 1)

    def random_incidents(n: int) -> fs.Incidents:
        return fs.Incidents(
            card=rng.integers(0, params.cards, n), start=rng.integers(start, latest_start, n)
        )

    # Fraudsters' devices are numbered after every holder's (3 per card at most).
    dev0 = 3 * params.cards
    testing = fs.card_testing(
        rng, random_incidents(counts[fs.CARD_TESTING]), cards, merchants, end, dev0
    )
    dev0 += counts[fs.CARD_TESTING]
    takeover = fs.account_takeover(
        rng, random_incidents(counts[fs.ACCOUNT_TAKEOVER]), cards, merchants, end, dev0
    )
    dev0 += counts[fs.ACCOUNT_TAKEOVER]
    breached = fs.breached_cards(
        rng, legit, merchants, counts[fs.COMPROMISED_MERCHANT], start, params.days
    )
    compromised = fs.compromised_merchant(rng, breached, cards, merchants, end, dev0)
    dev0 += len(breached)
    spree = fs.stolen_card_spree(
        rng, random_incidents(counts[fs.STOLEN_CARD_SPREE]), cards, merchants, end
    )

    every = [legit, testing, takeover, compromised, spree]
    if emerging is not None:
        # Drawn after every known scenario (and only when on), so the default data is the
        # same bytes as before the emerging scenario existed.
        nights = fs.cash_out_incidents(rng, counts[fs.EMERGING], params.cards, first_emerging, end)
        every.append(fs.atm_cash_out(rng, nights, cards, merchants, end))

    progress(0.9, "ordering by event time")
    events = Events.concat(every)
    if params.label_delay_days is not None:
        # Applied after every draw, so both delay modes simulate the very same payments.
        events = fs.with_fixed_label_delay(events, params.label_delay_days)
    # Ties in event_time are broken by transaction_id, which follows this order.
    events = events.take(np.lexsort((rng.random(len(events)), events.time)))
    table = to_arrow(events, merchants, params.cards, dev0)
    progress(1.0, "done")
    return table


def summarize(table: pa.Table, seconds: float) -> SimulationSummary:
    is_fraud = table.column("is_fraud").to_numpy()
    found = pc.value_counts(table.column("fraud_scenario").drop_null()).to_pylist()
    by_name = {entry["values"]: entry["counts"] for entry in found}
    counts = {name: int(by_name.get(name, 0)) for name in SCENARIOS}
    n_fraud = int(is_fraud.sum())
    reported = int(table.column("label_time").is_valid().to_numpy(zero_copy_only=False).sum())
    return SimulationSummary(
        rows=table.num_rows,
        fraud_rate=n_fraud / max(table.num_rows, 1),
        scenario_counts=counts,
        reported_share=reported / max(n_fraud, 1),
        seconds=seconds,
    )


def simulate_to_parquet(
    params: SimulationParams, out: Path, progress: Progress = _no_progress
) -> SimulationSummary:
    started = time.perf_counter()
    table = simulate_events(params, progress)
    write_parquet(table, out)
    return summarize(table, time.perf_counter() - started)
