"""Holdout metrics for a scorer, following the Fraud Detection Handbook where it defines them.

The same function judges the candidate model, the current champion and the heuristic
fallback, so their numbers sit side by side.
"""

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from sentinel_dagster.training.training_data import TrainingSet, known_labels
from serving.events import SCENARIOS

TOP_CARDS_PER_DAY = 100


@dataclass(frozen=True)
class Metrics:
    pr_auc: float
    roc_auc: float
    recall_at_0_5pct_fpr: float
    recall_at_1pct_fpr: float
    card_precision_at_100: float
    brier: float
    recall_at_threshold: float
    fpr_at_threshold: float
    scenario_recall: dict[str, float]

    def flat(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics, scenario recalls as `recall_<scenario>` (for MLflow and policy).
        A metric the data cannot give (NaN: card precision without card ids) is left out."""
        values = {k: v for k, v in asdict(self).items() if k != "scenario_recall"}
        values |= {f"recall_{name}": v for name, v in self.scenario_recall.items()}
        return {f"{prefix}{k}": float(v) for k, v in values.items() if not math.isnan(v)}


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """The best recall reachable while flagging at most `max_fpr` of legitimate payments."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr].max())


def card_precision_at_k(
    frame: pd.DataFrame,
    scores: np.ndarray,
    k: int = TOP_CARDS_PER_DAY,
    known_compromised: frozenset[str] = frozenset(),
) -> float:
    """Per UTC day, the share of frauded cards among the k highest-scored cards; mean of days.

    The Fraud Detection Handbook's "card precision top-k": a card ranks by its highest score
    that day and counts as frauded if any of its payments that day was fraud. A card found
    (frauded and in a day's top k) leaves later days' rankings, since an investigator would
    already have blocked it, and cards in `known_compromised` (known before the period) are
    left out of every day.
    """
    per_card = (
        pd.DataFrame(
            {
                "day": frame["event_time"].dt.floor("D").to_numpy(),
                "card": frame["card_id"].to_numpy(),
                "score": scores,
                "fraud": frame["is_fraud"].to_numpy(),
            }
        )
        .groupby(["day", "card"], sort=False)
        .agg(score=("score", "max"), fraud=("fraud", "max"))
    )
    per_card = per_card[~per_card.index.get_level_values("card").isin(known_compromised)]
    detected: set[str] = set()
    daily = []
    for _, cards in per_card.groupby(level="day"):  # in day order: detection carries forward
        cards = cards.droplevel("day")
        top = cards[~cards.index.isin(detected)].nlargest(k, "score")
        found = top.index[top["fraud"] == 1]
        daily.append(len(found) / k)
        detected.update(found)
    return float(np.mean(daily)) if daily else float("nan")


def known_compromised_cards(frame: pd.DataFrame, cutoff: pd.Timestamp) -> frozenset[str]:
    """Cards of payments before `cutoff` with a fraud whose label had arrived by `cutoff`."""
    before = frame[frame["event_time"] < cutoff]
    return frozenset(before["card_id"][known_labels(before, cutoff) == 1])


def compromised_before_holdout(data: TrainingSet) -> frozenset[str]:
    """Cards known compromised when the holdout starts, from every row before it (those left
    out of training as too recent for their labels included).

    The cutoff is the holdout's first day: labels that arrived by then were known to anyone
    scoring the holdout, so those cards are excluded from its card precision.
    """
    cutoff = data.holdout.frame["event_time"].min().floor("D")
    before = (data.train, data.validation, data.immature)
    return frozenset().union(*(known_compromised_cards(p.frame, cutoff) for p in before))


def evaluate_scores(
    frame: pd.DataFrame,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    known_compromised: frozenset[str] = frozenset(),
) -> Metrics:
    """All metrics of `scores` on `frame`; `known_compromised` cards only leave card precision."""
    flagged = scores >= threshold
    positives = labels == 1
    scenario_recall = {}
    if "fraud_scenario" in frame:
        scenario = frame["fraud_scenario"].to_numpy()
        for name in SCENARIOS:
            mask = positives & (scenario == name)
            if mask.any():
                scenario_recall[name] = float(flagged[mask].mean())
    return Metrics(
        pr_auc=float(average_precision_score(labels, scores)),
        roc_auc=float(roc_auc_score(labels, scores)),
        recall_at_0_5pct_fpr=recall_at_fpr(labels, scores, 0.005),
        recall_at_1pct_fpr=recall_at_fpr(labels, scores, 0.01),
        card_precision_at_100=card_precision_at_k(
            frame, scores, known_compromised=known_compromised
        )
        if {"card_id", "event_time"}.issubset(frame.columns)
        else math.nan,  # precomputed features only: no cards, no days
        brier=float(brier_score_loss(labels, np.clip(scores, 0.0, 1.0))),
        recall_at_threshold=float(flagged[positives].mean()),
        fpr_at_threshold=float(flagged[~positives].mean()),
        scenario_recall=scenario_recall,
    )


def single_row_latency_us(
    predict_one: Callable[[list[float]], float],
    rows: np.ndarray,
    calls: int = 1_000,
    rounds: int = 5,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> tuple[float, float]:
    """(p50, p99) microseconds of one-row predictions, cycling through `rows`: the median
    over `rounds` rounds of `calls` each, so one moment of a busy machine (another process
    taking the core) does not decide the gate's latency check; a slow model is slow in
    every round."""
    vectors = rows[: min(len(rows), 500)].tolist()
    for vector in vectors[:50]:
        predict_one(vector)  # warm up
    p50s, p99s = [], []
    for _ in range(rounds):
        timings = []
        for i in range(calls):
            vector = vectors[i % len(vectors)]
            started = clock()
            predict_one(vector)
            timings.append(clock() - started)
        timings.sort()
        p50s.append(timings[len(timings) // 2] / 1000)
        p99s.append(timings[int(len(timings) * 0.99)] / 1000)
    return statistics.median(p50s), statistics.median(p99s)
