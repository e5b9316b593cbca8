"""Feature engine benchmarks: the compiled kernels against the Python reference.

- `replay`: the default 1M-event stream replayed into the training table (what
  `transaction_features` and `sentinel features` do), each run in its own process so that
  its peak RSS is its own; the engines alternate (ABBA) so the machine's drift hits both.
- `online`: `process` latency per event at 100k active cards, both engines warmed up on
  the same 37 days and timed on the same last day in alternating blocks.
- `scaling`: the replay's cost per event as cards, merchants and events grow.

Run one with `.venv/bin/python -m benchmarks.run replay` (or `online`, `scaling`).
"""

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sentinel_dagster.data.dataset import load_transactions
from sentinel_dagster.features.feature_replay import epoch_seconds, replay
from sentinel_dagster.simulation.simulator import (
    SimulationParams,
    simulate_events,
    simulate_to_parquet,
)
from serving.feature_engine import CARD_FIELDS, EngineConfig, FeatureEngine

ENGINES = {"compiled": True, "python": False}


def replay_once(path: str, compiled: bool) -> dict:
    """One replay of a Parquet file in this process: what the child of `_replay_child`
    prints. Seconds are `replay`'s own (from the loaded frame to the table)."""
    import resource

    frame = load_transactions(Path(path))
    result = replay(frame, EngineConfig(compiled=compiled))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "events": len(frame),
        "cards": int(frame["card_id"].nunique()),
        "merchants": int(frame["merchant_id"].nunique()),
        "seconds": result.seconds,
        "peak_rss_bytes": peak,
        "kernels": result.engine.kernels,
    }


def _replay_child(path: Path, compiled: bool) -> dict:
    code = (
        "import json, sys; from benchmarks.engine import replay_once; "
        "print(json.dumps(replay_once(sys.argv[1], sys.argv[2] == 'compiled')))"
    )
    engine = "compiled" if compiled else "python"
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), engine], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def bench_replay(repeats: int) -> dict:
    """The default dataset (~1M events) replayed by each engine, alternating (ABBA)."""
    runs: dict[str, list[dict]] = {name: [] for name in ENGINES}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tx.parquet"
        simulate_to_parquet(SimulationParams(), path)
        order = list(ENGINES)
        for round_ in range(max(2, repeats - 1)):
            for name in order if round_ % 2 == 0 else order[::-1]:
                runs[name].append(_replay_child(path, ENGINES[name]))
    out: dict = {"events": runs["compiled"][0]["events"]}
    for name, results in runs.items():
        seconds = [r["seconds"] for r in results]
        median = statistics.median(seconds)
        out[name] = {
            "median_seconds": round(median, 2),
            "runs_seconds": [round(s, 2) for s in seconds],
            "events_per_second": round(out["events"] / median),
            "peak_rss_mib": round(statistics.median(r["peak_rss_bytes"] for r in results) / 2**20),
        }
    out["speedup"] = round(out["python"]["median_seconds"] / out["compiled"]["median_seconds"], 2)
    out["target_events_per_second"] = 200_000
    return out


def _rows(frame: pd.DataFrame) -> list[tuple]:
    columns = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "device_id"]
    columns += ["lat", "lon", "merchant_category"]
    times = epoch_seconds(frame["event_time"]).tolist()
    data = frame[columns].astype(object).where(frame[columns].notna(), None)
    out = []
    for t, (txn, card, shop, amount, channel, device, lat, lon, cat) in zip(
        times, data.itertuples(index=False, name=None), strict=True
    ):
        lat = math.nan if lat is None else lat
        lon = math.nan if lon is None else lon
        out.append((txn, t, card, shop, amount, channel, device, lat, lon, cat))
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _card_state_bytes(card: Any) -> int:
    """Container sizes plus the strings only this card holds (its transaction ids)."""
    own = sum(sys.getsizeof(getattr(card, name)) for name in CARD_FIELDS)
    return sys.getsizeof(card) + own + sum(sys.getsizeof(i) for i in card.ids)


def bench_online(repeats: int) -> dict:
    """`process` latency per event with 100k active cards, per engine.

    100,000 cards are simulated for 38 days; the first 37 days warm each engine up (so every
    window, the 30-day ones lagged by 7 days of label maturity included, is full) and the
    survivors are frozen out of the garbage collector as the service does; then every event
    of the last day is timed on its own (perf_counter_ns around one call), the two engines
    taking turns by blocks of 5,000 events so the machine's drift hits both alike.
    """
    params = SimulationParams(cards=100_000, days=38, seed=5)
    table = simulate_events(params).to_pandas()
    cutoff = pd.Timestamp(params.start, tz="UTC") + pd.Timedelta(days=params.days - 1)
    warm_rows = _rows(table[table["event_time"] < cutoff])
    timed_rows = _rows(table[table["event_time"] >= cutoff])
    del table
    engines = {name: FeatureEngine(config=EngineConfig(compiled=c)) for name, c in ENGINES.items()}
    warmup_seconds, state_bytes = {}, {}
    for name, engine in engines.items():
        gc.collect()
        rss_before = _rss_bytes()
        started = time.perf_counter()
        for row in warm_rows:
            engine.process(*row)
        warmup_seconds[name] = round(time.perf_counter() - started, 1)
        gc.collect()
        state_bytes[name] = _rss_bytes() - rss_before
    gc.collect()
    gc.freeze()  # as the service's background loop does
    latencies: dict[str, list[int]] = {name: [] for name in engines}
    clock = time.perf_counter_ns
    block = 5_000
    for start in range(0, len(timed_rows), block):
        names = list(engines) if (start // block) % 2 == 0 else list(engines)[::-1]
        for name in names:
            process, out = engines[name].process, latencies[name]
            for row in timed_rows[start : start + block]:
                began = clock()
                process(*row)
                out.append(clock() - began)

    def pct(values: list[int], q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] / 1000, 1)

    result: dict = {
        "active_cards": len(engines["compiled"].store.table("card")),
        "warmup_events": len(warm_rows),
        "timed_events": len(timed_rows),
        "warmup_seconds": warmup_seconds,
        # Growth of the process RSS over the warm-up, per active card (merchant state and
        # the 2-day transaction-id table included; the id strings the input holds excluded).
        "rss_state_bytes_per_active_card": {
            name: round(grown / len(engines[name].store.table("card")))
            for name, grown in state_bytes.items()
        },
        "budget": {"p50_us": 5, "p99_us": 20},
    }
    for name, values in latencies.items():
        values.sort()
        result[name] = {
            "p50_us": pct(values, 0.50),
            "p90_us": pct(values, 0.90),
            "p99_us": pct(values, 0.99),
            "max_us": round(values[-1] / 1000, 1),
        }
    cards = engines["compiled"].store.table("card").values()
    result["card_state_bytes_median"] = round(statistics.median(map(_card_state_bytes, cards)))
    return result


# Cards x days: ~1.7 payments per card per day, so events grow with both.
SCALING_GRID = ((10_000, 60), (100_000, 6), (10_000, 300), (50_000, 60), (100_000, 30))


def bench_scaling(repeats: int) -> dict:
    """The compiled replay's cost per event as cards (and with them merchants) and events
    grow; each run in its own process (its peak RSS is its own)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cards, days in SCALING_GRID:
            path = Path(tmp) / f"{cards}x{days}.parquet"
            simulate_to_parquet(SimulationParams(cards=cards, days=days, seed=3), path)
            runs = [_replay_child(path, True) for _ in range(max(1, repeats // 3))]
            seconds = statistics.median(r["seconds"] for r in runs)
            first = runs[0]
            rows.append(
                {
                    "cards": first["cards"],
                    "merchants": first["merchants"],
                    "days": days,
                    "events": first["events"],
                    "seconds": round(seconds, 2),
                    "us_per_event": round(seconds / first["events"] * 1e6, 2),
                    "peak_rss_mib": round(first["peak_rss_bytes"] / 2**20),
                }
            )
            path.unlink()
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}
