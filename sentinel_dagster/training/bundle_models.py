"""The models of one bundle: the full model and one per request profile (serving/profiles.py),
trained from the same training set, compiled with a parity proof and judged on the same
holdout, each beside the heuristic fallback on what that profile's requests carry.

The full model reads every feature; a profile's model reads only the features its callers
send. The heuristic is judged for each the way the service would run it on such a request:
the profile's features as given, every other feature at its cold-start value.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentinel_dagster.reporting.markdown import metrics_table
from sentinel_dagster.training.compile_model import check_parity, to_onnx
from sentinel_dagster.training.evaluation import Metrics, evaluate_scores, single_row_latency_us
from sentinel_dagster.training.training_data import Period, TrainingSet
from sentinel_dagster.training.xgboost_candidate import (
    TrainedModel,
    TrainParams,
    feature_matrix,
    train_candidate,
)
from serving.bundle import PROOF_FILE, Bundle
from serving.features import FEATURE_NAMES
from serving.heuristic import heuristic_score
from serving.predictor import CompiledPredictor
from serving.profiles import FULL, TIME_FEATURES, RequestProfile
from serving.resolve import cold_start_vector
from serving.schemas import ScoreRequest

FULL_MODEL = RequestProfile(FULL, FEATURE_NAMES)
# What a request that carries nothing else is given (counts 0, averages NaN...), from the
# engine itself; amount and the time features always come with a request.
_COLD_START = np.array(cold_start_vector(ScoreRequest(amount=0.0), 0.0), dtype=np.float32)
_ALWAYS_CARRIED = frozenset({"amount", *TIME_FEATURES})


PROOF_FRAUDS, PROOF_ROWS = 16, 64


def proof_of(booster: Any, rows: np.ndarray) -> dict[str, list[Any]]:
    """Feature rows and XGBoost's own scores for them: what the service re-scores with the
    compiled model before it serves a bundle (serving/bundle.py). NaN is written as null."""
    rows = np.asarray(rows, dtype=np.float32)
    scores = booster.inplace_predict(rows).astype(np.float64)
    return {
        "rows": [[None if np.isnan(v) else float(v) for v in row] for row in rows],
        "scores": [float(s) for s in scores],
    }


def proof_rows(period: Period, columns: tuple[str, ...]) -> np.ndarray:
    """A few real rows of `period`: its first frauds and first other payments."""
    features = feature_matrix(period, columns)
    frauds = np.flatnonzero(period.labels == 1)[:PROOF_FRAUDS]
    others = np.flatnonzero(period.labels == 0)[: PROOF_ROWS - len(frauds)]
    return features[np.sort(np.concatenate([frauds, others]))]


@dataclass(frozen=True)
class CompiledModel:
    profile: RequestProfile
    trained: TrainedModel
    onnx: bytes
    parity_max_abs_diff: float  # XGBoost against ONNX on the holdout
    proof: dict[str, list[Any]]  # holdout rows and XGBoost's scores, carried by the bundle

    @property
    def threshold(self) -> float:
        return self.trained.threshold

    def save(self, folder: Path) -> None:
        """model.json (XGBoost), model.onnx and proof.json into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        self.trained.booster.save_model(folder / "model.json")
        (folder / "model.onnx").write_bytes(self.onnx)
        (folder / PROOF_FILE).write_text(json.dumps(self.proof))

    def summary(self) -> dict[str, Any]:
        return {
            "features": list(self.profile.features),
            "threshold": self.threshold,
            "best_iteration": self.trained.best_iteration,
            "validation_pr_auc": self.trained.validation_pr_auc,
            "scale_pos_weight": self.trained.scale_pos_weight,
            "onnx_parity_max_abs_diff": self.parity_max_abs_diff,
        }


def train_and_compile(
    data: TrainingSet, params: TrainParams, profile: RequestProfile = FULL_MODEL
) -> CompiledModel:
    """XGBoost on the profile's features, compiled to ONNX; ParityError if they disagree."""
    trained = train_candidate(data, params, profile.features)
    onnx = to_onnx(trained.booster)
    gap = check_parity(trained.booster, onnx, feature_matrix(data.holdout, profile.features))
    proof = proof_of(trained.booster, proof_rows(data.holdout, profile.features))
    return CompiledModel(profile, trained, onnx, gap, proof)


def request_matrix(frame: pd.DataFrame, profile: RequestProfile) -> np.ndarray:
    """Full-width feature vectors as the service builds them for this profile's requests:
    the profile's features (and amount and time, which every request has) from `frame`,
    every other feature at its cold-start value. Works on tables with only some features."""
    matrix = np.tile(_COLD_START, (len(frame), 1))
    kept = _ALWAYS_CARRIED.union(profile.features)
    for i, name in enumerate(FEATURE_NAMES):
        if name in kept and name in frame:
            matrix[:, i] = frame[name].to_numpy(dtype=np.float32)
    return matrix


def heuristic_scores(frame: pd.DataFrame, profile: RequestProfile) -> np.ndarray:
    rows = request_matrix(frame, profile).tolist()
    return np.array([heuristic_score(r).probability for r in rows])


@dataclass(frozen=True)
class ModelEvaluation:
    metrics: Metrics
    heuristic: Metrics  # the fallback on the same holdout, given what this profile carries
    predict_p50_us: float
    predict_p99_us: float
    scores: np.ndarray  # the model's holdout scores (for plots)
    heuristic_scores: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics.flat(),
            "heuristic_metrics": self.heuristic.flat(),
            "predict_p50_us": self.predict_p50_us,
            "predict_p99_us": self.predict_p99_us,
        }


def evaluate_model(
    onnx: bytes,
    profile: RequestProfile,
    threshold: float,
    holdout: Period,
    compromised: frozenset[str] = frozenset(),
) -> ModelEvaluation:
    """The compiled model's holdout metrics and single-row latency beside the heuristic's."""
    predictor = CompiledPredictor(onnx)
    features = feature_matrix(holdout, profile.features)
    scores = predictor.predict(features)
    labels, frame = holdout.labels, holdout.frame
    rules = heuristic_scores(frame, profile)
    p50, p99 = single_row_latency_us(predictor.predict_one, features)
    return ModelEvaluation(
        evaluate_scores(frame, labels, scores, threshold, compromised),
        evaluate_scores(frame, labels, rules, 0.5, compromised),
        p50,
        p99,
        scores,
        rules,
    )


def models_of(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evaluation (candidate_evaluation.json) of every model of a candidate by profile,
    the full one first (absent when the candidate has none), each with its feature count."""
    full = (
        {FULL: {**evaluation, "features": len(FEATURE_NAMES)}} if evaluation.get("metrics") else {}
    )
    profiles = {
        name: {**p, "features": len(p["features"])}
        for name, p in evaluation.get("profiles", {}).items()
    }
    return full | profiles


def profile_card_section(
    name: str,
    features: list[str] | tuple[str, ...],
    threshold: float,
    parity: float,
    judged: dict[str, Any],
    evidence: str | None = None,
) -> str:
    """The model card's section on one request profile's model; `judged` holds its
    `metrics` and `heuristic_metrics`; `evidence` qualifies the holdout (e.g. a random split)."""
    lines = [
        f"### {name}",
        f"- Reads: {', '.join(features)}",
        f"- Decision threshold: {threshold:.4f} (chosen on validation like the full model's)",
        f"- ONNX parity on the holdout: max |XGBoost - ONNX| = {parity:.2e}",
        *([f"- {evidence}"] if evidence else []),
        "- Holdout metrics, beside the heuristic given only what such a request carries:",
        "",
        metrics_table({name: judged["metrics"], "heuristic": judged["heuristic_metrics"]}),
        "",
    ]
    return "\n".join(lines)


def quality_markdown(evaluations: dict[str, dict[str, Any]]) -> str:
    """One row per model (profile) and its heuristic: PR-AUC and recall at 1% FPR."""
    rows = [
        "| profile | features | model PR-AUC | model recall @1% FPR "
        "| heuristic PR-AUC | heuristic recall @1% FPR |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in evaluations.items():
        m, h = e["metrics"], e["heuristic_metrics"]
        rows.append(
            f"| {name} | {e.get('features', '')} | {m['pr_auc']:.4f} | "
            f"{m['recall_at_1pct_fpr']:.4f} | {h['pr_auc']:.4f} | {h['recall_at_1pct_fpr']:.4f} |"
        )
    return "\n".join(rows)


def score_bundle(
    bundle: Bundle, holdout: Period, compromised: frozenset[str] = frozenset()
) -> dict[str, Metrics | None]:
    """The holdout metrics of each model of a published bundle (by profile): what a
    candidate's models are compared against. None for a model whose features the holdout
    lacks (a full model beside a table of precomputed features)."""
    scored: dict[str, Metrics | None] = {}
    for name, model in bundle.models.items():
        if not set(model.features).issubset(holdout.frame.columns):
            scored[name] = None
            continue
        scores = model.predictor.predict(feature_matrix(holdout, model.features))
        scored[name] = evaluate_scores(
            holdout.frame, holdout.labels, scores, model.threshold, compromised
        )
    return scored
