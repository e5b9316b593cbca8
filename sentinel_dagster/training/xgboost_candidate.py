"""Training the XGBoost candidate and choosing its decision threshold."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from sentinel_dagster.training.training_data import Period, TrainingSet
from serving.features import FEATURE_NAMES


@dataclass(frozen=True)
class TrainParams:
    max_depth: int = 6
    learning_rate: float = 0.1
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    seed: int = 7
    target_fpr: float = 0.01  # the threshold flags at most this share of legitimate payments


@dataclass(frozen=True)
class TrainedModel:
    booster: xgb.Booster
    best_iteration: int
    threshold: float
    scale_pos_weight: float
    validation_pr_auc: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(features).astype(np.float64)


def threshold_for_fpr(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on these negatives is <= target."""
    negatives = np.sort(scores[labels == 0])
    if len(negatives) == 0:
        return 0.5
    allowed = int(np.floor(target_fpr * len(negatives)))  # negatives that may score above
    index = len(negatives) - allowed - 1
    return float(np.nextafter(negatives[index], np.inf)) if index >= 0 else 0.0


def feature_matrix(period: Period, columns: Sequence[str]) -> np.ndarray:
    """The period's `columns`, in that order, as the float32 matrix XGBoost is given."""
    return period.frame[list(columns)].to_numpy(dtype=np.float32)


def train_candidate(
    data: TrainingSet, params: TrainParams, columns: Sequence[str] = FEATURE_NAMES
) -> TrainedModel:
    """XGBoost with class weighting and early stopping on validation PR-AUC; deterministic.

    `columns` narrows the features (for ablations); the served model uses all of them.
    """
    train, valid = data.train, data.validation
    positives = int(train.labels.sum())
    scale = (len(train.labels) - positives) / max(positives, 1)
    names = list(columns)
    valid_features = feature_matrix(valid, names)
    dtrain = xgb.DMatrix(feature_matrix(train, names), label=train.labels, feature_names=names)
    dvalid = xgb.DMatrix(valid_features, label=valid.labels, feature_names=names)
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "eval_metric": "aucpr",
            "tree_method": "hist",
            "max_depth": params.max_depth,
            "eta": params.learning_rate,
            "min_child_weight": params.min_child_weight,
            "subsample": params.subsample,
            "colsample_bytree": params.colsample_bytree,
            "scale_pos_weight": scale,
            "seed": params.seed,
            "nthread": 2,
        },
        dtrain,
        num_boost_round=params.num_boost_round,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    best, best_score = int(booster.best_iteration), float(booster.best_score)
    # Keep only the trees early stopping chose, so every consumer sees the same model.
    booster = booster[: best + 1]
    scores = booster.inplace_predict(valid_features).astype(np.float64)
    threshold = threshold_for_fpr(scores, valid.labels, params.target_fpr)
    return TrainedModel(booster, best, threshold, scale, best_score)
