"""What the features contribute: XGBoost gain per feature and a feature-group ablation.

Gain measures how much a feature's splits improved the training loss; it is cheap but
splits credit between features that stand in for each other. The ablation answers the
question that matters for keeping a feature: how much worse is the holdout when the model
is retrained without a group of features.
"""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from sentinel_dagster.training.evaluation import Metrics, evaluate_scores
from sentinel_dagster.training.training_data import Period, TrainingSet
from sentinel_dagster.training.xgboost_candidate import TrainParams, feature_matrix, train_candidate
from serving.features import FEATURE_NAMES

ALL_FEATURES = "none (all features)"
# Enough rows for stable differences between groups, at a few seconds per model.
ABLATION_TRAIN_ROWS = 150_000


def gain_importance(booster: xgb.Booster, names: Sequence[str]) -> pd.DataFrame:
    """Total gain per feature (0 if never split on) and its share of all gain, largest first.

    `names` are the booster's feature names; total rather than mean gain, so that the shares
    add up to how much each feature did over the whole model.
    """
    gains = pd.Series(booster.get_score(importance_type="total_gain"), dtype=float)
    table = pd.DataFrame(
        {"feature": list(names), "gain": gains.reindex(list(names), fill_value=0.0).to_numpy()}
    )
    total = table["gain"].sum()
    table["share"] = table["gain"] / total if total > 0 else 0.0
    return table.sort_values("gain", ascending=False, kind="stable", ignore_index=True)


def _row(removed: str, features: int, metrics: Metrics, base: Metrics) -> dict[str, Any]:
    return {
        "removed": removed,
        "features_left": features,
        "pr_auc": metrics.pr_auc,
        "pr_auc_change": metrics.pr_auc - base.pr_auc,
        "roc_auc": metrics.roc_auc,
        "recall_at_1pct_fpr": metrics.recall_at_1pct_fpr,
        "card_precision_at_100": metrics.card_precision_at_100,
    }


def sample_training(split: TrainingSet, max_rows: int, seed: int = 0) -> TrainingSet:
    """`split` with at most `max_rows` training rows: every positive, then random negatives."""
    train = split.train
    if len(train.frame) <= max_rows:
        return split
    positives = np.flatnonzero(train.labels == 1)
    negatives = np.flatnonzero(train.labels == 0)
    # Half the sample at least stays negative, even where positives alone would fill it.
    keep = min(len(negatives), max(max_rows - len(positives), max_rows // 2))
    chosen = np.random.default_rng(seed).choice(negatives, keep, replace=False)
    rows = np.sort(np.concatenate([positives, chosen]))
    sampled = Period(train.name, train.frame.iloc[rows], train.labels[rows], train.cutoff)
    return replace(split, train=sampled)


def ablation(
    split: TrainingSet,
    params: TrainParams,
    groups: Mapping[str, Sequence[str]],
    known_compromised: frozenset[str] = frozenset(),
    max_train_rows: int = ABLATION_TRAIN_ROWS,
) -> pd.DataFrame:
    """Holdout metrics of the model retrained with `params` without each group of features.

    Every model, the full one of the first row included, trains as the candidate does (early
    stopping included) on the same sample of at most `max_train_rows` training rows, all
    positives kept: a group's row differs from the first only by the missing features, at a
    fraction of a full retrain's cost. The other rows follow, the largest PR-AUC loss first.
    """
    split = sample_training(split, max_train_rows)
    hold = split.holdout

    def holdout_metrics(columns: Sequence[str]) -> Metrics:
        model = train_candidate(split, params, columns)
        scores = model.predict(feature_matrix(hold, columns))
        return evaluate_scores(hold.frame, hold.labels, scores, model.threshold, known_compromised)

    base = holdout_metrics(FEATURE_NAMES)
    rows = []
    for group, removed in groups.items():
        dropped = set(removed)
        kept = [name for name in FEATURE_NAMES if name not in dropped]
        rows.append(_row(group, len(kept), holdout_metrics(kept), base))
    table = pd.DataFrame(rows).sort_values("pr_auc_change", kind="stable")
    full = pd.DataFrame([_row(ALL_FEATURES, len(FEATURE_NAMES), base, base)])
    return pd.concat([full, table], ignore_index=True)
