"""Model quality before and after label-maturity-aware training, on two streams.

`python -m benchmarks.quality` (part of `make bench`) simulates the default stream and the
same payments with every chargeback exactly 7 days late, then trains and scores on the same
holdout (the last 7 days, judged on `is_fraud`):

- before: the 24 features of feature set v1 and the split as it was (training labels as of
  the validation start, validation labels as of the holdout start, no gap);
- each change alone (37 features with the old split; 24 features with the new split);
- after: the 37 features of v2 and the label-maturity split;
- the heuristic fallback;
- and the ablation of the after model (retrained without each feature group).

All metrics, CP@100 included, are computed by today's `evaluate_scores`, with the cards known
compromised before the holdout left out of CP@100, so every row is comparable.
Results go to $SENTINEL_HOME/bench/quality.json and print as Markdown tables.
"""

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.results import save_results
from sentinel_dagster.features.feature_importance import ablation
from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.reporting.markdown import frame_markdown
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from sentinel_dagster.training.evaluation import compromised_before_holdout, evaluate_scores
from sentinel_dagster.training.training_data import (
    Period,
    TrainingDataError,
    TrainingSet,
    known_labels,
    split_out_of_time,
)
from sentinel_dagster.training.xgboost_candidate import TrainParams, feature_matrix, train_candidate
from serving.feature_engine import EngineConfig
from serving.features import FEATURES, FeatureSet, feature_groups
from serving.heuristic import heuristic_score

V1_FEATURES = FeatureSet(FEATURES[:24], version=1)  # the feature set before v2
METRICS = ("pr_auc", "roc_auc", "recall_at_1pct_fpr", "card_precision_at_100")


def legacy_split(
    table: pd.DataFrame, validation_days: int = 7, holdout_days: int = 7
) -> TrainingSet:
    """The split before label maturity: no gap, each period's labels as of its own end."""
    last_day = table["event_time"].max().floor("D")
    holdout_start = last_day - pd.Timedelta(days=holdout_days - 1)
    validation_start = holdout_start - pd.Timedelta(days=validation_days)
    times = table["event_time"]
    train = table[times < validation_start]
    validation = table[(times >= validation_start) & (times < holdout_start)]
    holdout = table[times >= holdout_start]
    split = TrainingSet(
        Period("train", train, known_labels(train, validation_start), validation_start),
        Period("validation", validation, known_labels(validation, holdout_start), holdout_start),
        Period("holdout", holdout, holdout["is_fraud"].to_numpy(dtype=np.int8), None),
        Period("immature", table.iloc[:0], np.zeros(0, dtype=np.int8), None),
    )
    for period in (split.train, split.validation):
        if period.labels.sum() == 0:
            raise TrainingDataError(f"the {period.name} period has no usable fraud")
    return split


@dataclass(frozen=True)
class Stream:
    name: str
    params: SimulationParams


def _row(name: str, metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"model": name, **{m: round(metrics[m], 4) for m in METRICS}, **extra}


def _train_and_score(
    name: str, split: TrainingSet, columns: list[str], known: frozenset[str]
) -> dict[str, Any]:
    started = time.perf_counter()
    model = train_candidate(split, TrainParams(), columns)
    scores = model.predict(feature_matrix(split.holdout, columns))
    hold = split.holdout
    metrics = evaluate_scores(hold.frame, hold.labels, scores, model.threshold, known).flat()
    positives = int(split.train.labels.sum() + split.validation.labels.sum())
    truth = int(split.train.frame["is_fraud"].sum() + split.validation.frame["is_fraud"].sum())
    return _row(
        name,
        metrics,
        frauds_taught=f"{positives:,} of {truth:,}",
        train_rows=len(split.train.frame),
        seconds=round(time.perf_counter() - started, 1),
    )


def evaluate_stream(stream: Stream) -> dict[str, Any]:
    events = simulate_events(stream.params).to_pandas()
    v2 = replay(events, EngineConfig(features=FeatureSet())).table
    v1 = replay(events, EngineConfig(features=V1_FEATURES)).table
    new_split = split_out_of_time(v2, label_maturity_days=7)
    known = compromised_before_holdout(new_split)
    v1_cols, v2_cols = list(V1_FEATURES.names), list(FeatureSet().names)
    rows, notes = [], []
    try:
        old_split_v1, validation_days = legacy_split(v1), 7
    except TrainingDataError as exc:
        notes.append(f"the old split with validation_days 7 fails ({exc}); rows use 14")
        old_split_v1, validation_days = legacy_split(v1, validation_days=14), 14
    old_split_v2 = legacy_split(v2, validation_days=validation_days)
    rows.append(_train_and_score("before: v1 features, old split", old_split_v1, v1_cols, known))
    rows.append(_train_and_score("v2 features, old split", old_split_v2, v2_cols, known))
    new_split_v1 = split_out_of_time(v1, label_maturity_days=7)
    rows.append(_train_and_score("v1 features, maturity split", new_split_v1, v1_cols, known))
    rows.append(_train_and_score("after: v2 features, maturity split", new_split, v2_cols, known))
    hold = new_split.holdout
    heuristic = np.array([heuristic_score(r).probability for r in hold.features.tolist()])
    metrics = evaluate_scores(hold.frame, hold.labels, heuristic, 0.5, known).flat()
    rows.append(_row("heuristic fallback", metrics))
    started = time.perf_counter()
    ablated = ablation(new_split, TrainParams(), feature_groups(), known_compromised=known)
    return {
        "stream": stream.name,
        "events": len(events),
        "holdout_rows": len(hold.frame),
        "holdout_frauds": int(hold.labels.sum()),
        "notes": notes,
        "models": rows,
        "ablation": ablated.round(4).to_dict("records"),
        "ablation_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=SimulationParams().cards)
    parser.add_argument("--days", type=int, default=SimulationParams().days)
    args = parser.parse_args()
    base = SimulationParams(cards=args.cards, days=args.days)
    streams = [
        Stream("default (chargebacks 1-90 days, median ~6)", base),
        Stream("fixed 7-day chargeback delay", replace(base, label_delay_days=7.0)),
    ]
    results = [evaluate_stream(stream) for stream in streams]
    out = save_results("quality", results)
    for result in results:
        print(
            f"\n### {result['stream']}: {result['events']:,} events, holdout "
            f"{result['holdout_rows']:,} payments / {result['holdout_frauds']:,} frauds\n"
        )
        for note in result["notes"]:
            print(f"Note: {note}\n")
        print(frame_markdown(pd.DataFrame(result["models"]), max_rows=20))
        print(f"\nAblation ({result['ablation_seconds']} s):\n")
        print(frame_markdown(pd.DataFrame(result["ablation"]), max_rows=20))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
