"""Gain importance and the feature-group ablation, on data where one feature is the signal."""

import numpy as np
import pandas as pd
import pytest

from sentinel_dagster.features.feature_importance import (
    ALL_FEATURES,
    ablation,
    gain_importance,
    sample_training,
)
from sentinel_dagster.training.training_data import (
    LABEL_COLUMN,
    PERIOD_COLUMN,
    TrainingSet,
    from_frame,
)
from sentinel_dagster.training.xgboost_candidate import TrainParams, train_candidate
from serving.features import FEATURE_NAMES

START = pd.Timestamp("2026-01-01", tz="UTC")
SIGNAL = "txn_count_10m"  # any feature would do; the groups below must not include it
GROUPS = {"signal": (SIGNAL,), "first five": FEATURE_NAMES[:5], "last two": FEATURE_NAMES[-2:]}
# Every tree sees every column, so the signal is never missing from a tree.
PARAMS = TrainParams(num_boost_round=40, max_depth=2, colsample_bytree=1.0)


@pytest.fixture(scope="module")
def split() -> TrainingSet:
    """A week per period; every feature is noise except SIGNAL, shifted 4 sd for frauds."""
    rng = np.random.default_rng(5)
    parts = []
    for week, (name, rows) in enumerate((("train", 6000), ("validation", 3000), ("holdout", 3000))):
        fraud = (rng.random(rows) < 0.05).astype(np.int8)
        part = pd.DataFrame(rng.normal(size=(rows, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
        part[SIGNAL] += 4.0 * fraud
        offsets = np.sort(rng.uniform(0, 7, rows)) + 7 * week
        part["event_time"] = START + pd.to_timedelta(offsets, unit="D")
        part["card_id"] = rng.integers(0, 400, rows).astype(str)
        part["is_fraud"] = fraud
        part["label_time"] = (part["event_time"] + pd.Timedelta(days=1)).where(fraud == 1)
        part[PERIOD_COLUMN] = name
        part[LABEL_COLUMN] = fraud
        parts.append(part)
    return from_frame(pd.concat(parts, ignore_index=True))


def test_removing_the_signal_group_costs_pr_auc_and_noise_groups_barely(
    split: TrainingSet,
) -> None:
    table = ablation(split, PARAMS, GROUPS).set_index("removed")
    assert table.loc[ALL_FEATURES, "pr_auc"] > 0.6
    assert table.loc[ALL_FEATURES, "pr_auc_change"] == 0.0
    # Without the signal the ranking is near chance: PR-AUC near the 5% fraud rate.
    assert table.loc["signal", "pr_auc_change"] < -0.4
    assert table.loc["signal", "roc_auc"] < 0.65
    for noise in ("first five", "last two"):
        assert abs(table.loc[noise, "pr_auc_change"]) < 0.02
    assert table.index[1] == "signal"  # the largest loss comes first
    assert table.loc["first five", "features_left"] == len(FEATURE_NAMES) - 5


def test_gain_ranks_the_signal_first_and_unused_features_at_zero(split: TrainingSet) -> None:
    kept = [name for name in FEATURE_NAMES if name not in GROUPS["last two"]]
    booster = train_candidate(split, PARAMS, kept).booster
    table = gain_importance(booster, FEATURE_NAMES)
    assert list(table.columns) == ["feature", "gain", "share"]
    assert table["share"].sum() == pytest.approx(1.0)
    assert table.loc[0, "feature"] == SIGNAL
    assert table.loc[0, "share"] > 0.5
    assert table["gain"].is_monotonic_decreasing
    unused = table[table["feature"].isin(GROUPS["last two"])]
    assert (unused["gain"] == 0.0).all()


def test_the_ablation_trains_on_a_sample_that_keeps_every_positive(split: TrainingSet) -> None:
    sampled = sample_training(split, max_rows=1_000)
    assert len(sampled.train.frame) == 1_000
    assert sampled.train.labels.sum() == split.train.labels.sum()
    assert sampled.validation is split.validation and sampled.holdout is split.holdout
    assert sample_training(split, max_rows=10**6) is split
    table = ablation(split, PARAMS, GROUPS, max_train_rows=2_000).set_index("removed")
    assert table.loc["signal", "pr_auc_change"] < -0.4
