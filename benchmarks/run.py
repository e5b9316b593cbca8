"""`make bench`: in-process benchmarks with time.perf_counter, reporting medians.

Results are printed and written to $SENTINEL_HOME/bench/<name>.json; docs/BENCHMARKS.md
quotes them with this command.
"""

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sentinel_dagster import paths
from sentinel_dagster.dataset import load_transactions
from sentinel_dagster.policy import load_policy
from sentinel_dagster.simulator import SimulationParams, simulate_to_parquet
from sentinel_dagster.validation import validate_transactions


def _median_seconds(work: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def bench_simulator(repeats: int) -> dict:
    """Default simulation (~1M events) written to Parquet; budget 60 s."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tx.parquet"
        summary = simulate_to_parquet(SimulationParams(), out)
        median, times = _median_seconds(
            lambda: simulate_to_parquet(SimulationParams(), out), repeats
        )
    return {
        "rows": summary.rows,
        "median_seconds": round(median, 2),
        "runs_seconds": [round(t, 2) for t in times],
        "events_per_second": round(summary.rows / median),
        "budget_seconds": 60,
    }


def bench_validation(repeats: int) -> dict:
    """The full GX suite on the default dataset (no Data Docs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tx.parquet"
        simulate_to_parquet(SimulationParams(), path)
        frame = load_transactions(path)
        policy = load_policy().data
        median, times = _median_seconds(lambda: validate_transactions(frame, policy), repeats)
    return {
        "rows": len(frame),
        "median_seconds": round(median, 2),
        "runs_seconds": [round(t, 2) for t in times],
    }


BENCHMARKS: dict[str, Callable[[int], dict]] = {
    "simulator": bench_simulator,
    "validation": bench_validation,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} [all]")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    out_dir = paths.sentinel_home() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(BENCHMARKS):
        result = BENCHMARKS[name](args.repeats)
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: {json.dumps(result)}")


if __name__ == "__main__":
    main()
