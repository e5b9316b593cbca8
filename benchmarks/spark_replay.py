"""The training table from one process and from Spark `local[2]`, and a cluster's capacity.

`.venv/bin/python -m benchmarks.run spark` (part of `make bench`). For 1M and 5M simulated
events, each engine runs in a child process as `sentinel features` runs it (in-process: the
file loaded and replayed; spark: `spark_replay` on local[2], its own JVM), ABBA order when
repeated. Reported: seconds, the one process's peak RSS, and for Spark the driver's
(Python and JVM) and the largest Python worker's, each side's per-event cost and largest
partition.

The capacity model extrapolates from the largest run's measurements: the core-seconds per
event Spark spent in all (engine, Arrow, shuffles, sort, write), spread over a cluster's
cores, but never below the time one task takes for the busiest merchant, whose events are
one partition whatever the cluster (a merchant's features need all its events in order).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sentinel_dagster.simulation.simulator import SimulationParams, simulate_to_parquet

SIZES = ((10_000, 60), (50_000, 60))  # cards x days: ~1M and ~5M events
MASTER = "local[2]"
CLUSTERS = (64, 256, 1024)  # cores
TARGETS = (1_000_000_000, 5_000_000_000)
PARTITION_ROWS = 1_000_000  # rows per partition the model assumes (its memory is measured)


def run_once(engine: str, path: str) -> dict:
    """One replay in this process, as the CLI runs it; what `_child` prints."""
    import time

    import pandas as pd

    from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, load_policy
    from sentinel_dagster.data.dataset import load_transactions
    from sentinel_dagster.features.feature_replay import replay
    from sentinel_dagster.features.spark_replay import peak_rss_kib
    from serving.feature_engine import EngineConfig
    from serving.features import FeatureSet

    maturity = load_policy(DEFAULT_POLICY_PATH).label_maturity_days
    config = EngineConfig(features=FeatureSet(label_maturity_days=maturity))
    started = time.perf_counter()
    if engine == "in_process":
        frame = load_transactions(Path(path))
        result = replay(frame, config)
        return {
            "events": len(frame),
            "seconds": result.seconds,  # the replay, from the loaded frame to the table
            "wall_seconds": time.perf_counter() - started,  # the file's loading included
            "peak_rss_mib": peak_rss_kib() / 1024,
        }
    from sentinel_dagster.features.spark_replay import spark_replay

    with tempfile.TemporaryDirectory() as tmp:
        run = spark_replay(path, Path(tmp) / "features", config, master=MASTER)
    counts = pd.read_parquet(path, columns=["merchant_id"])["merchant_id"].value_counts()
    return {
        **run.metadata(),  # its `seconds`: the jobs, from the session ready to the table written
        "events": run.rows,
        "wall_seconds": time.perf_counter() - started,  # the session's start included
        "busiest_merchant_events": int(counts.iloc[0]),
    }


def _child(engine: str, path: Path) -> dict:
    code = (
        "import json, sys; from benchmarks.spark_replay import run_once; "
        "print(json.dumps(run_once(sys.argv[1], sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, engine, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def capacity(spark: dict, memory: dict) -> list[dict]:
    """Hours for 1B and 5B events on clusters of CLUSTERS cores, at the simulator's busiest
    merchant share and at 1% (a dominant merchant of a real issuer)."""
    cores = int(MASTER[len("local[") : -1])
    core_us = spark["seconds"] * cores * 1e6 / spark["events"]  # every job; not the startup
    # One task's cost per event of the merchant side (its engine work, plus the Spark work
    # per event spread over both sides: an estimate, labelled as such in BENCHMARKS.md).
    engine_us = spark["card_us_per_event"] + spark["merchant_us_per_event"]
    task_us = spark["merchant_us_per_event"] + (core_us - engine_us) / 2
    measured_share = spark["busiest_merchant_events"] / spark["events"]
    rows = []
    for events in TARGETS:
        for share in (measured_share, 0.01):
            busiest = events * share
            for n in CLUSTERS:
                spread = events * core_us / n / 1e6
                floor = busiest * task_us / 1e6
                rows.append(
                    {
                        "events": events,
                        "busiest_share": round(share, 5),
                        "cores": n,
                        "hours": round(max(spread, floor) / 3600, 2),
                        "bound_by": "busiest merchant" if floor > spread else "cores",
                        "busiest_partition_rows": int(busiest),
                        "busiest_worker_gib": round(
                            (memory["base_mib"] + busiest * memory["mib_per_row"]) / 1024, 1
                        ),
                    }
                )
    return rows


def worker_memory(runs: list[dict]) -> dict:
    """The Python worker's peak RSS as base + slope x rows of its largest partition, from
    two runs of different partition sizes."""
    (a_rows, a_mib), (b_rows, b_mib) = sorted(
        (max(r["card_largest_partition_rows"], r["merchant_largest_partition_rows"]),
         r["worker_peak_rss_mib"])
        for r in runs
    )  # fmt: skip
    slope = (b_mib - a_mib) / (b_rows - a_rows)
    return {"base_mib": round(a_mib - slope * a_rows), "mib_per_row": slope}


def bench_spark(repeats: int) -> dict:
    """1M (median of `repeats // 2` ABBA pairs, at least one) and 5M (one run each)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (cards, days) in enumerate(SIZES):
            path = Path(tmp) / f"{cards}x{days}.parquet"
            simulate_to_parquet(SimulationParams(cards=cards, days=days, seed=3), path)
            pairs = max(1, repeats // 2) if k == 0 else 1
            runs: dict[str, list[dict]] = {"in_process": [], "spark": []}
            for i in range(pairs):
                order = ("in_process", "spark") if i % 2 == 0 else ("spark", "in_process")
                for engine in order:
                    runs[engine].append(_child(engine, path))
            row = {
                "events": runs["in_process"][0]["events"],
                "in_process": _median_run(runs["in_process"]),
                "spark": _median_run(runs["spark"]),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
            path.unlink()
    largest = results[-1]["spark"]
    memory = worker_memory([r["spark"] for r in results])
    return {
        "master": MASTER,
        "sizes": results,
        "worker_memory": memory,
        "capacity": capacity(largest, memory),
    }


def _median_run(runs: list[dict]) -> dict:
    """The run with the median time (its other figures are that run's)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "runs_seconds": [round(r["seconds"], 2) for r in runs]}


if __name__ == "__main__":
    print(json.dumps(bench_spark(int(sys.argv[1]) if len(sys.argv) > 1 else 2), indent=2))
