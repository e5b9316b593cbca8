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

import numpy as np

from benchmarks.engine import bench_online, bench_replay, bench_scaling
from benchmarks.spark_replay import bench_spark
from sentinel_dagster.cli.runner import materialize_lineage
from sentinel_dagster.core import paths
from sentinel_dagster.core.policy import load_policy
from sentinel_dagster.data.dataset import load_transactions
from sentinel_dagster.data.validation import validate_transactions
from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_to_parquet
from sentinel_dagster.training.compile_model import to_onnx
from sentinel_dagster.training.evaluation import (
    Metrics,
    compromised_before_holdout,
    evaluate_scores,
    single_row_latency_us,
)
from sentinel_dagster.training.training_data import split_out_of_time
from sentinel_dagster.training.xgboost_candidate import TrainParams, train_candidate
from serving.heuristic import heuristic_score
from serving.predictor import CompiledPredictor


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


def bench_heuristic(repeats: int) -> dict:
    """The heuristic fallback's quality on the default dataset's replayed features (every
    row): what the service answers with while the breaker is open, and the gate's baseline."""
    from sklearn.metrics import average_precision_score

    from sentinel_dagster.training.evaluation import recall_at_fpr
    from serving.features import FEATURE_NAMES
    from serving.heuristic import heuristic_score

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tx.parquet"
        simulate_to_parquet(SimulationParams(), path)
        table = replay(load_transactions(path)).table
    labels = table["is_fraud"].to_numpy().astype(bool)
    scores = np.array([heuristic_score(row).probability for row in
                       table[list(FEATURE_NAMES)].to_numpy().tolist()])  # fmt: skip
    return {
        "rows": len(table),
        "fraud_rate": round(float(labels.mean()), 5),
        "pr_auc": round(float(average_precision_score(labels, scores)), 4),
        "recall_at_1pct_fpr": round(recall_at_fpr(labels, scores, 0.01), 4),
    }


def _latency(predict_one: Callable[[list[float]], float], rows: list) -> dict[str, float]:
    runs = [single_row_latency_us(predict_one, rows, calls=20_000) for _ in range(3)]
    return {
        "p50_us": round(statistics.median(r[0] for r in runs), 1),
        "p99_us": round(statistics.median(r[1] for r in runs), 1),
    }


def bench_training(repeats: int) -> dict:
    """Training on the default dataset's features (features excluded), quality, predictor speed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tx.parquet"
        simulate_to_parquet(SimulationParams(), path)
        table = replay(load_transactions(path)).table
    split = split_out_of_time(table)
    times, model = [], None
    for _ in range(max(1, repeats - 3)):
        started = time.perf_counter()
        model = train_candidate(split, TrainParams())
        times.append(time.perf_counter() - started)
    assert model is not None
    hold = split.holdout
    compromised = compromised_before_holdout(split)
    predictor = CompiledPredictor(to_onnx(model.booster))
    scores = predictor.predict(hold.features)
    heuristic = np.array([heuristic_score(r).probability for r in hold.features.tolist()])
    rows = hold.features
    booster = model.booster

    def xgboost_one(vector: list[float]) -> float:
        return float(booster.inplace_predict(np.asarray([vector], dtype=np.float32))[0])

    return {
        "train_rows": len(split.train.frame),
        "train_median_seconds": round(statistics.median(times), 2),
        "train_runs_seconds": [round(t, 2) for t in times],
        "best_iteration": model.best_iteration,
        "budget_seconds": 60,
        "holdout_rows": len(hold.frame),
        "holdout_frauds": int(hold.labels.sum()),
        "model": evaluate_scores(
            hold.frame, hold.labels, scores, model.threshold, compromised
        ).flat(),
        "heuristic": evaluate_scores(hold.frame, hold.labels, heuristic, 0.5, compromised).flat(),
        "onnx_single_row": _latency(predictor.predict_one, rows),
        "xgboost_single_row": _latency(xgboost_one, rows[:2000]),
        "predictor_budget_p99_us": 20,
    }


def _headline(metrics: Metrics) -> dict[str, float]:
    return {
        "pr_auc": round(metrics.pr_auc, 4),
        "recall_at_1pct_fpr": round(metrics.recall_at_1pct_fpr, 4),
    }


def bench_profiles(repeats: int) -> dict:
    """Each request profile's model beside the full model and the heuristic on the default
    dataset's out-of-time holdout (what the lineage trains and gates), and what the
    precomputed-7 model answers to the earlier system's two documented examples."""
    from sentinel_dagster.training.bundle_models import (
        FULL_MODEL,
        evaluate_model,
        train_and_compile,
    )
    from serving.predictor import CompiledPredictor
    from serving.resolve import cold_start_vector, with_given_features
    from serving.schemas import ScoreRequest
    from tests.serving.test_heuristic import BENIGN, RISKY

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tx.parquet"
        simulate_to_parquet(SimulationParams(), path)
        table = replay(load_transactions(path)).table
    split = split_out_of_time(table)
    compromised = compromised_before_holdout(split)
    result: dict = {"holdout_rows": len(split.holdout.frame)}
    for profile in (FULL_MODEL, *load_policy().profiles()):
        model = train_and_compile(split, TrainParams(), profile)
        judged = evaluate_model(model.onnx, profile, model.threshold, split.holdout, compromised)
        entry = {
            "features": len(profile.features),
            "threshold": round(model.threshold, 4),
            "model": _headline(judged.metrics),
            "heuristic": _headline(judged.heuristic),
            "predict_p99_us": round(judged.predict_p99_us, 1),
        }
        if profile is not FULL_MODEL:
            predictor = CompiledPredictor(model.onnx)
            for name, body in (("risky_example", RISKY), ("benign_example", BENIGN)):
                request = ScoreRequest.model_validate(body)
                vector = with_given_features(cold_start_vector(request, 0.0), request)
                p = predictor.predict_one([vector[i] for i in profile.columns])
                entry[name] = {"probability": round(p, 4), "declined": p >= model.threshold}
        result[profile.name] = entry
    return result


def bench_score_path(repeats: int) -> dict:
    """`Scorer.score_many` per request in process (features, model call, heuristic, log
    line): a raw event with a card, and the earlier system's seven precomputed features."""
    import asyncio

    from serving.registry import Registry
    from serving.schemas import ScoreRequest
    from serving.service import Service
    from serving.settings import ServiceSettings
    from tests.serving.bundles import publish_with_profiles
    from tests.serving.test_heuristic import RISKY

    async def per_request_us(service: Service, requests: list[ScoreRequest]) -> float:
        started = time.perf_counter()
        for request in requests:
            await service.scorer.score_many([request])
        return (time.perf_counter() - started) / len(requests) * 1e6

    async def run(home: Path) -> dict:
        publish_with_profiles(Registry(home / "registry"))
        service = Service(ServiceSettings(home=home), journal=False)
        service.reload()
        raw = [
            ScoreRequest.model_validate(
                {"amount": 10.0 + i % 50, "card_id": f"c{i % 5000}", "merchant_id": f"m{i % 300}",
                 "transaction_id": f"t{i}", "channel": "online"}
            )
            for i in range(20_000 * repeats)
        ]  # fmt: skip
        seven = [ScoreRequest.model_validate(RISKY)] * 20_000
        rounds = {"raw_event_us": [], "precomputed_7_us": []}
        for r in range(repeats):
            rounds["raw_event_us"].append(await per_request_us(service, raw[r * 20_000 :][:20_000]))
            rounds["precomputed_7_us"].append(await per_request_us(service, seven))
        return {k: round(statistics.median(v), 1) for k, v in rounds.items()}

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(Path(tmp)))


def bench_lineage(repeats: int) -> dict:
    """`make run`'s main_job on the default dataset in a fresh SENTINEL_HOME; budget 60 s."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = materialize_lineage(home=Path(tmp))
        seconds = time.perf_counter() - started
    return {
        "success": report.success,
        "seconds": round(seconds, 1),
        "asset_seconds": report.seconds,  # each asset's body, from its materialization
        "budget_seconds": 60,
    }


BENCHMARKS: dict[str, Callable[[int], dict]] = {
    "simulator": bench_simulator,
    "validation": bench_validation,
    "replay": bench_replay,
    "online": bench_online,
    "scaling": bench_scaling,
    "heuristic": bench_heuristic,
    "training": bench_training,
    "profiles": bench_profiles,
    "score_path": bench_score_path,
    "lineage": bench_lineage,
    "spark": bench_spark,
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
