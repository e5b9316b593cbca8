"""Training from precomputed features: the earlier system's training format.

The earlier system trained from a Parquet file of its seven feature columns and `is_fraud`
(`python -m src.train --data FILE`): no time and no ids, its callers' stream layer having
computed the aggregates. `sentinel train --data FILE` takes such a table (or any table of a
request profile's features and `is_fraud`) to a published model of that profile:

1. Great Expectations checks on those columns; a failure stops here, nothing is trained;
2. a stratified random split, since without `event_time` there is no out-of-time holdout:
   weaker evidence than the lineage's (the holdout is not the future of the training rows,
   and one card's payments can sit on both sides), which the evaluation and the model card
   say;
3. the lineage's own training, ONNX compilation with its parity proof, evaluation beside the
   heuristic (given only those features) and promotion gate (against the champion's model
   of the same profile, when it has one);
4. a bundle whose full model is absent (`"full_model": false`): the service answers every
   request with the profile model, from the online state's values for a card.

There is no event log to replay, so this runs as plain functions rather than through the
Dagster lineage (whose assets are the event log, its validation and its replay); MLflow
records the run, its datasets, the registered model version and the served ONNX model as the
lineage does (mlflow_tracking.py), the run named after the profile and the file.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import mlflow
import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.model_selection import train_test_split

from sentinel_dagster.core.policy import DataPolicy, Policy
from sentinel_dagster.data.validation import ValidationReport, run_suite
from sentinel_dagster.governance.promotion import BundleDecision, decide_bundle
from sentinel_dagster.governance.publishing import BundleContent, ProfileContent, publish
from sentinel_dagster.governance.signing_keys import signing_key_from_env
from sentinel_dagster.monitoring.reference import build_reference
from sentinel_dagster.training import mlflow_tracking
from sentinel_dagster.training.bundle_models import (
    CompiledModel,
    ModelEvaluation,
    evaluate_model,
    profile_card_section,
    train_and_compile,
)
from sentinel_dagster.training.champion_score import score_champion
from sentinel_dagster.training.training_data import Period, TrainingSet, content_digest
from sentinel_dagster.training.xgboost_candidate import TrainParams
from serving.bundle import BundleError
from serving.features import OTHER_CATEGORY, FeatureSet, markdown_table
from serving.profiles import RequestProfile
from serving.registry import Registry

LABEL = "is_fraud"
CHECKS = ("schema", "features", "labels", "fraud_rate")
SPLIT_NOTE = (
    "Stratified random split (no event_time in the data): the holdout is not the future of "
    "the training rows and the same card can appear on both sides, so these metrics are "
    "weaker evidence than an out-of-time holdout's."
)
NEEDS_EVENT_LOG = (
    "no full model and no online features: both need the event log itself, one row per "
    "payment with transaction_id, event_time, card_id, merchant_id and amount (and is_fraud "
    "with label_time for training); see DESIGN.md section 3"
)
# (min, max, nullable) of each feature a request profile can hold; None: unbounded. The
# ranges are the request schema's; averages and "days since" are null without history.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "amount": (0.0, None, False),
    "hour_of_day": (0.0, 23.0, False),
    "day_of_week": (0.0, 6.0, False),
    "channel_online": (0.0, 1.0, True),
    "merchant_category_code": (0.0, OTHER_CATEGORY, True),
    "txn_count_24h": (0.0, None, False),
    "distinct_merchants_24h": (0.0, None, False),
    "days_since_last_txn": (0.0, None, True),
    "avg_amount_7d": (0.0, None, True),
}


class PrecomputedError(ValueError):
    """The table is not a precomputed-feature table of any profile; the message says why."""


def table_profile(frame: pd.DataFrame, profiles: tuple[RequestProfile, ...]) -> RequestProfile:
    """The largest profile whose features are all columns of `frame`; PrecomputedError if
    the table is an event log or has no profile's columns."""
    if "event_time" in frame or "card_id" in frame:
        raise PrecomputedError(
            "this is an event log (it has event_time or card_id): train it through the "
            "lineage, `sentinel materialize` with the transactions asset's source_path"
        )
    for profile in sorted(profiles, key=lambda p: -len(p.features)):
        if set(profile.features).issubset(frame.columns):
            return profile
    wanted = "; ".join(f"{p.name}: {', '.join(p.features)}" for p in profiles) or "none declared"
    raise PrecomputedError(
        f"no request profile's columns are all present (profiles: {wanted}). An event log "
        f"needs transaction_id, event_time, card_id, merchant_id and amount"
    )


def _expectations(
    profile: RequestProfile, rules: DataPolicy, usable: set[str]
) -> list[tuple[str, gx.expectations.Expectation]]:
    E = gx.expectations
    columns = [*profile.features, LABEL]
    pairs: list[tuple[str, gx.expectations.Expectation]] = [
        ("schema", E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False)),
        ("schema", E.ExpectTableRowCountToBeBetween(min_value=rules.min_rows)),
    ]
    for name in profile.features:
        if name not in usable:
            continue
        low, high, nullable = RANGES[name]
        if name == "amount":
            high = rules.max_amount
        if not nullable:
            pairs.append(("features", E.ExpectColumnValuesToNotBeNull(column=name)))
        pairs.append(
            (
                "features",
                E.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high),
            )
        )
    if LABEL in usable:
        pairs += [
            ("labels", E.ExpectColumnValuesToNotBeNull(column=LABEL)),
            ("labels", E.ExpectColumnValuesToBeInSet(column=LABEL, value_set=[0, 1])),
            (
                "fraud_rate",
                E.ExpectColumnMeanToBeBetween(
                    column=LABEL, min_value=rules.fraud_rate.min, max_value=rules.fraud_rate.max
                ),
            ),
        ]
    return pairs


def validate_precomputed(
    frame: pd.DataFrame, profile: RequestProfile, rules: DataPolicy, docs_dir: Path | None = None
) -> ValidationReport:
    """The Great Expectations suite of a precomputed table: the profile's columns numeric
    and in the request schema's ranges, `is_fraud` 0/1, the fraud rate in the policy's bounds."""
    columns = [*profile.features, LABEL]
    missing = [c for c in columns if c not in frame]
    problems = [
        f"column '{c}' has type {frame[c].dtype}, expected a number"
        for c in columns
        if c in frame and not ptypes.is_numeric_dtype(frame[c].dtype)
    ]
    usable = {c for c in columns if c in frame} - {p.split("'")[1] for p in problems}
    pairs = _expectations(profile, rules, usable)
    return run_suite(frame, "precomputed_features", pairs, problems, missing, CHECKS, docs_dir)


def split_stratified(
    frame: pd.DataFrame, seed: int, validation: float = 0.15, holdout: float = 0.15
) -> TrainingSet:
    """Train / validation / holdout at random, each with the table's fraud rate."""
    labels = frame[LABEL].to_numpy(dtype=np.int8)
    if labels.sum() < 3:
        raise PrecomputedError(f"{int(labels.sum())} frauds: a stratified split needs at least 3")
    rest, held = train_test_split(frame, test_size=holdout, stratify=labels, random_state=seed)
    share = validation / (1.0 - holdout)
    train, valid = train_test_split(rest, test_size=share, stratify=rest[LABEL], random_state=seed)

    def period(name: str, rows: pd.DataFrame) -> Period:
        labels = rows[LABEL].to_numpy(dtype=np.int8)
        if not 0 < labels.sum() < len(labels):
            raise PrecomputedError(
                f"{int(frame[LABEL].sum())} frauds in {len(frame):,} rows: the {name} part of "
                "the split has no fraud (or nothing else); training, validation and holdout "
                "each need both"
            )
        return Period(name, rows, labels, None)

    return TrainingSet(
        period("train", train),
        period("validation", valid),
        period("holdout", held),
        Period("immature", frame.iloc[:0], np.zeros(0, dtype=np.int8), None),
    )


@dataclass(frozen=True)
class PrecomputedRun:
    profile: RequestProfile
    model: CompiledModel
    evaluation: ModelEvaluation
    decision: BundleDecision
    champion: str | None
    mlflow_run_id: str
    published: tuple[str, str] | None  # (version, role) when the gate passed


@dataclass(frozen=True)
class _Candidate:
    """A trained and judged profile model, and where it came from."""

    profile: RequestProfile
    model: CompiledModel
    judged: ModelEvaluation
    features: FeatureSet
    data_fingerprint: str
    source: str
    code_version: str
    target_fpr: float
    drift_reference: dict[str, Any]  # monitoring/reference.py, on the holdout

    def summary(self) -> dict[str, Any]:
        return {
            **self.judged.summary(),
            "features": list(self.profile.features),
            "split": "stratified",
            "evidence": SPLIT_NOTE,
        }


def _card_fields(c: _Candidate, mlflow_run_id: str) -> dict[str, str]:
    features = c.features
    return {
        "compiled_format": "ONNX (onnxruntime)",
        "data_fingerprint": c.data_fingerprint,
        "code_version": c.code_version,
        "mlflow_run_id": mlflow_run_id,
        "feature_set": f"{features.name} v{features.version} ({features.fingerprint()})",
        "label_maturity_days": f"{features.label_maturity_days:g}",
        "features": markdown_table(features),
        "threshold": f"no full model in this bundle ({NEEDS_EVENT_LOG})",
        "target_fpr": str(c.target_fpr),
        "metrics_table": f"No full model. {SPLIT_NOTE}",
        "scenario_table": "-",
        "data_notes": f"Trained from precomputed features ({c.source}). {SPLIT_NOTE}",
        "profiles": profile_card_section(
            c.profile.name,
            c.profile.features,
            c.model.threshold,
            c.model.parity_max_abs_diff,
            c.judged.summary(),
            SPLIT_NOTE,
        ),
    }


def _log_to_mlflow(
    c: _Candidate, data: TrainingSet, params: TrainParams, home: Path
) -> tuple[str, str]:
    """The run (tagged as trained from precomputed features, named after the profile and
    the file), its datasets and the registered model version: (run id, model version)."""
    name = c.profile.name
    tags = {
        "training_data": "precomputed",
        "split": "stratified_random",
        "profile": name,
        **mlflow_tracking.run_tags(c.data_fingerprint),
    }
    run_name = f"train-{name}-{Path(c.source).stem}"
    with mlflow_tracking.training_run(home, run_name, tags) as run:
        mlflow.log_params({**vars(params), "source": c.source, "profile": name})
        mlflow.log_metrics(
            {f"{name}.holdout_{k}": v for k, v in c.judged.metrics.flat().items()}
            | {f"{name}.threshold": c.model.threshold}
            | {f"{name}.onnx_parity_max_abs_diff": c.model.parity_max_abs_diff}
        )
        mlflow_tracking.log_split(
            data, list(c.profile.features), LABEL, Path(c.source).stem, c.source
        )
        model_version = mlflow_tracking.log_models(c.model, data.train.frame)
    return run.info.run_id, model_version


def _bundle_content(
    c: _Candidate, run_id: str, model_version: str, champion: str | None
) -> BundleContent:
    """A bundle without a full model: the profile model alone."""
    return BundleContent(
        model_json=None,
        model_onnx=None,
        threshold=None,
        metrics=None,
        data_fingerprint=c.data_fingerprint,
        code_version=c.code_version,
        mlflow_run_id=run_id,
        mlflow_model_version=model_version,
        lineage={
            "mlflow_run_id": run_id,
            "source": c.source,
            "split": "stratified_random",
            "full_model": NEEDS_EVENT_LOG,
            "evaluation": {"profiles": {c.profile.name: c.summary()}},
            "decision": {"passed": True, "champion_version": champion},
            "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        },
        card_fields=_card_fields(c, run_id),
        feature_set=c.features,
        proof={c.profile.name: c.model.proof},
        drift_reference=c.drift_reference,
        profiles=(
            ProfileContent(
                name=c.profile.name,
                features=c.profile.features,
                model_json=bytes(c.model.trained.booster.save_raw("json")),
                model_onnx=c.model.onnx,
                threshold=c.model.threshold,
                metrics=c.judged.metrics.flat(),
                onnx_parity_max_abs_diff=c.model.parity_max_abs_diff,
            ),
        ),
    )


def train_precomputed(
    frame: pd.DataFrame,
    profile: RequestProfile,
    params: TrainParams,
    policy: Policy,
    home: Path,
    source: str,
    code_version: str = "unknown",
) -> PrecomputedRun:
    """Split, train, compile, evaluate and gate a profile model; publish it if it passes.

    The signing key (signing_keys.signing_key_from_env) is read first: a misconfigured one
    raises SigningKeyError before anything is trained."""
    signing_key = signing_key_from_env()
    data = split_stratified(frame, params.seed)
    model = train_and_compile(data, params, profile)
    judged = evaluate_model(model.onnx, profile, model.threshold, data.holdout)
    candidate = _Candidate(
        profile,
        model,
        judged,
        FeatureSet(label_maturity_days=policy.label_maturity_days),
        content_digest(frame[[*profile.features, LABEL]]),
        source,
        code_version,
        params.target_fpr,
        build_reference(
            profile.name, data.holdout.frame, profile.features, judged.scores,
            model.threshold, "holdout (stratified random split)",
        ).to_dict(),
    )  # fmt: skip
    registry = Registry(home / "registry")
    try:
        judged_against = score_champion(registry, candidate.features, data.holdout)
    except BundleError as exc:
        raise PrecomputedError(f"the champion bundle cannot be loaded: {exc}") from None
    champion = judged_against.version
    decision = decide_bundle(
        {profile.name: candidate.summary()}, policy.promotion, judged_against.for_gate(),
        judged_against.incomparable,
    )  # fmt: skip
    run_id, model_version = _log_to_mlflow(candidate, data, params, home)
    published = None
    if decision.passed:
        content = _bundle_content(candidate, run_id, model_version, champion)
        published = publish(registry, content, signing_key=signing_key)
        mlflow_tracking.record_bundle(run_id, model_version, published[0])
        mlflow_tracking.set_alias(published[1], model_version)
    return PrecomputedRun(profile, model, judged, decision, champion, run_id, published)
