"""Training lineage logic: split and label cutoff, training, compilation, evaluation."""

import math

import numpy as np
import pandas as pd
import pytest

from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from sentinel_dagster.training.compile_model import PARITY_TOLERANCE, check_parity, to_onnx
from sentinel_dagster.training.evaluation import card_precision_at_k, evaluate_scores, recall_at_fpr
from sentinel_dagster.training.training_data import (
    TrainingDataError,
    TrainingSet,
    known_labels,
    split_out_of_time,
)
from sentinel_dagster.training.xgboost_candidate import (
    TrainParams,
    threshold_for_fpr,
    train_candidate,
)
from serving.features import FEATURE_INDEX, FEATURE_NAMES
from serving.heuristic import heuristic_score
from serving.predictor import CompiledPredictor

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2026-01-01", tz="UTC")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    # Enough cards and days for a model worth comparing: ~120k events, 21 days of training.
    frame = simulate_events(SimulationParams(cards=2_000, days=35, seed=21)).to_pandas()
    return replay(frame).table


@pytest.fixture(scope="module")
def split(features: pd.DataFrame) -> TrainingSet:
    return split_out_of_time(features, validation_days=7, holdout_days=7)


@pytest.fixture(scope="module")
def model(split: TrainingSet):
    return train_candidate(split, TrainParams(num_boost_round=120))


def test_a_fraud_labelled_after_the_cutoff_is_not_a_training_positive() -> None:
    cutoff = START + 10 * DAY
    frame = pd.DataFrame(
        {
            "event_time": [START + DAY] * 4,
            "is_fraud": [1, 1, 1, 0],
            "label_time": [cutoff - pd.Timedelta(seconds=1), cutoff, cutoff + DAY, pd.NaT],
        }
    )
    assert known_labels(frame, cutoff).tolist() == [1, 1, 0, 0]


def test_split_leaves_a_label_maturity_gap_and_judges_labels_at_the_holdout_start(
    features: pd.DataFrame, split: TrainingSet
) -> None:
    train, valid, hold = split.periods()
    holdout_start = hold.frame["event_time"].min().floor("D")
    assert hold.frame["event_time"].dt.floor("D").nunique() == 7
    assert train.frame["event_time"].max() < valid.frame["event_time"].min()
    # Validation ends label_maturity_days (7) before the holdout: the gap is left out.
    assert valid.frame["event_time"].min() >= holdout_start - 14 * DAY
    assert valid.frame["event_time"].max() < holdout_start - 7 * DAY
    gap = features["event_time"].between(holdout_start - 7 * DAY, holdout_start, "left")
    assert len(split.immature.frame) == gap.sum() > 0
    parts = (train, valid, hold, split.immature)
    assert sum(len(part.frame) for part in parts) == len(features)
    assert train.cutoff == valid.cutoff == holdout_start
    # Training still misses some frauds: with realistic delays a few labels come later.
    assert 0 < train.labels.sum() < train.frame["is_fraud"].sum()
    assert (hold.labels == hold.frame["is_fraud"].to_numpy()).all()


def _daily_frauds(days: int, delay_days: float) -> pd.DataFrame:
    """A payment every 6 hours, the noon one a fraud labelled `delay_days` later."""
    times = pd.date_range(START, periods=days * 4, freq="6h")
    is_fraud = (times.hour == 12).astype(int)
    label = times + pd.Timedelta(days=delay_days)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(times))],
            "event_time": times,
            "is_fraud": is_fraud,
            "label_time": pd.Series(label).where(is_fraud == 1, pd.NaT),
        }
    )


def test_with_a_fixed_delay_no_fraud_is_taught_as_genuine() -> None:
    frame = _daily_frauds(days=40, delay_days=7)
    split = split_out_of_time(frame, validation_days=7, holdout_days=7, label_maturity_days=7)
    for period in (split.train, split.validation):
        assert period.labels.sum() == period.frame["is_fraud"].sum() > 0
    assert len(split.immature.frame) == 7 * 4
    # Without the gap, the validation's frauds of the last 7 days were taught as genuine.
    no_gap = split_out_of_time(frame, validation_days=14, holdout_days=7, label_maturity_days=0)
    assert no_gap.validation.labels.sum() < no_gap.validation.frame["is_fraud"].sum()


def test_too_little_data_names_the_days_it_has_and_needs() -> None:
    frame = _daily_frauds(days=20, delay_days=7)
    message = "the data covers 20 days but this split needs at least 22: holdout 7 \\+ label"
    with pytest.raises(TrainingDataError, match=message):
        split_out_of_time(frame, validation_days=7, holdout_days=7, label_maturity_days=7)


def test_labels_slower_than_the_maturity_are_named_as_the_cause() -> None:
    frame = _daily_frauds(days=60, delay_days=20)
    with pytest.raises(TrainingDataError, match=r"median 20\.0 days .* label maturity of 7 days"):
        split_out_of_time(frame, validation_days=7, holdout_days=7, label_maturity_days=7)


def test_unlabelled_data_is_refused(features: pd.DataFrame) -> None:
    with pytest.raises(TrainingDataError, match="no 'label_time' column"):
        split_out_of_time(features.drop(columns=["label_time"]))


def test_threshold_keeps_the_false_positive_rate_at_or_below_target() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random(10_000)
    labels = (rng.random(10_000) < 0.05).astype(np.int8)
    threshold = threshold_for_fpr(scores, labels, 0.01)
    fpr = (scores[labels == 0] >= threshold).mean()
    assert fpr <= 0.01
    assert fpr > 0.009  # and not needlessly below it


def test_training_is_deterministic_and_beats_the_heuristic(split: TrainingSet, model) -> None:
    again = train_candidate(split, TrainParams(num_boost_round=120))
    hold = split.holdout
    assert np.array_equal(model.predict(hold.features), again.predict(hold.features))
    assert model.threshold == again.threshold
    model_metrics = evaluate_scores(hold.frame, hold.labels, model.predict(hold.features), 0.5)
    heuristic = np.array([heuristic_score(r).probability for r in hold.features.tolist()])
    heuristic_metrics = evaluate_scores(hold.frame, hold.labels, heuristic, 0.5)
    assert model_metrics.pr_auc > heuristic_metrics.pr_auc
    assert model_metrics.pr_auc > 0.5


def test_compiled_model_matches_xgboost_within_tolerance(split: TrainingSet, model) -> None:
    onnx_bytes = to_onnx(model.booster)
    gap = check_parity(model.booster, onnx_bytes, split.holdout.features)
    assert gap <= PARITY_TOLERANCE
    predictor = CompiledPredictor(onnx_bytes)
    row = split.holdout.features[3]
    assert predictor.predict_one(row.tolist()) == pytest.approx(
        float(model.predict(row.reshape(1, -1))[0]), abs=PARITY_TOLERANCE
    )


def test_recall_at_fpr_and_card_precision_on_known_data() -> None:
    labels = np.array([0] * 8 + [1, 1])
    scores = np.array([0.1] * 7 + [0.9, 0.8, 0.2])
    assert recall_at_fpr(labels, scores, 0.0) == 0.0  # the top score is a legit one
    assert recall_at_fpr(labels, scores, 0.125) == 1.0  # threshold 0.2 costs one negative
    frame = pd.DataFrame(
        {
            "event_time": [START] * 3 + [START + DAY] * 3,
            "card_id": ["a", "a", "b", "a", "b", "c"],
            "is_fraud": [0, 1, 0, 0, 0, 1],
        }
    )
    # Day 1: a (fraud) ranks first of 2 cards; day 2: c (fraud) ranks last of 3.
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.8, 0.1])
    assert card_precision_at_k(frame, scores, k=1) == pytest.approx(0.5)
    assert card_precision_at_k(frame, scores, k=3) == pytest.approx((1 / 3 + 1 / 3) / 2)


def test_heuristic_fires_rules_with_reasons() -> None:
    quiet = [math.nan] * len(FEATURE_NAMES)
    for name in ("amount", "txn_count_10m", "txn_count_1h", "card_has_reported_fraud"):
        quiet[FEATURE_INDEX[name]] = 0.0
    quiet[FEATURE_INDEX["amount"]] = 40.0
    calm = heuristic_score(quiet)
    assert calm.reasons == ()
    assert calm.probability < 0.01
    burst = list(quiet)
    burst[FEATURE_INDEX["amount"]] = 1.5
    burst[FEATURE_INDEX["txn_count_10m"]] = 6
    result = heuristic_score(burst)
    assert result.reasons == ("card_velocity_10m", "small_amount_burst")
    assert result.probability > 0.3


def test_predictor_is_safe_to_share_between_threads(split: TrainingSet, model) -> None:
    from concurrent.futures import ThreadPoolExecutor

    predictor = CompiledPredictor(to_onnx(model.booster))
    rows = split.holdout.features[:400]
    expected = predictor.predict(rows)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(predictor.predict_one, rows.tolist()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
