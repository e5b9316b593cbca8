"""Training assets (group `training`): split, candidate, evaluation, decision, bundle.

Each asset is a thin wrapper: the logic lives in training_data, training, compile_model,
evaluation, champion_score, promotion, publishing and mlflow_tracking (what the MLflow run
records). A failed gate is a normal outcome recorded in metadata; `model_bundle` then
publishes nothing and the champion stays as it was.
"""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
import xgboost as xgb
from pydantic import Field

from sentinel_dagster.core import git, paths
from sentinel_dagster.core import policy as policy_module  # `policy` is the assets' resource
from sentinel_dagster.defs.analysis import candidate_ablation
from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.features.feature_importance import gain_importance
from sentinel_dagster.governance import promotion, publishing
from sentinel_dagster.governance.promotion import decide_bundle
from sentinel_dagster.governance.publishing import BundleContent, ProfileContent, publish
from sentinel_dagster.governance.signing_keys import signing_key_from_env
from sentinel_dagster.monitoring import reference as drift_reference
from sentinel_dagster.monitoring.reference import (
    DRIFT_REFERENCE_FILE,
    build_reference,
    period_label,
)
from sentinel_dagster.reporting import markdown as reporting
from sentinel_dagster.reporting import plots
from sentinel_dagster.reporting.markdown import frame_markdown, metrics_table
from sentinel_dagster.reporting.plots import png_markdown, pr_curve_png, score_distribution_png
from sentinel_dagster.training import (
    bundle_models,
    champion_score,
    compile_model,
    evaluation,
    mlflow_tracking,
    training_data,
)
from sentinel_dagster.training import xgboost_candidate as training
from sentinel_dagster.training.bundle_models import (
    FULL_MODEL,
    evaluate_model,
    models_of,
    profile_card_section,
    quality_markdown,
    train_and_compile,
)
from sentinel_dagster.training.champion_score import score_on_holdout
from sentinel_dagster.training.evaluation import compromised_before_holdout
from sentinel_dagster.training.training_data import (
    LABEL_COLUMN,
    TrainingDataError,
    fingerprint,
    from_frame,
    split_out_of_time,
    to_frame,
)
from sentinel_dagster.training.xgboost_candidate import TrainParams
from serving import bundle
from serving.bundle import PROOF_FILE, BundleError
from serving.events import SCENARIOS
from serving.features import FEATURE_NAMES, FeatureSet, markdown_table
from serving.profiles import FULL, RequestProfile
from serving.registry import Registry
from serving.signatures import SigningKeyError

_DEFAULT = TrainParams()


def registry_of(home: SentinelHome) -> Registry:
    return Registry(home.root() / "registry")


class SplitConfig(dg.Config):
    validation_days: int = Field(default=7, description="Days after training, for early stopping.")
    holdout_days: int = Field(default=7, description="Most recent days, never trained on.")


@dg.asset(
    group_name="training",
    io_manager_key="parquet_io_manager",
    kinds={"pandas"},
    **catalog("training", training_data, card_data=True),
)
@timed
def training_set(
    config: SplitConfig, transaction_features: pd.DataFrame, policy: GovernancePolicy
) -> dg.Output[pd.DataFrame]:
    """Out-of-time split with a label-maturity gap; labels as known at the holdout start."""
    maturity = policy.load().label_maturity_days
    try:
        split = split_out_of_time(
            transaction_features, config.validation_days, config.holdout_days, maturity
        )
    except TrainingDataError as exc:
        raise dg.Failure(description=str(exc)) from None
    periods = (*split.periods(), split.immature)
    summary = pd.DataFrame([{"period": p.name, **p.summary()} for p in periods])
    frame = to_frame(split)
    return dg.Output(
        frame,
        metadata={
            "periods": dg.MetadataValue.md(frame_markdown(summary)),
            "rows": len(frame),
            "label_maturity_days": maturity,
            "immature_rows_left_out": len(split.immature.frame),
            "data_fingerprint": fingerprint(frame),
        },
    )


class TrainConfig(dg.Config):
    max_depth: int = _DEFAULT.max_depth
    learning_rate: float = _DEFAULT.learning_rate
    num_boost_round: int = _DEFAULT.num_boost_round
    early_stopping_rounds: int = _DEFAULT.early_stopping_rounds
    min_child_weight: float = _DEFAULT.min_child_weight
    subsample: float = _DEFAULT.subsample
    colsample_bytree: float = _DEFAULT.colsample_bytree
    seed: int = _DEFAULT.seed
    target_fpr: float = Field(default=_DEFAULT.target_fpr, description="Threshold's FPR target.")


PROFILES_DIR = "profiles"  # a candidate's profile models: <model_dir>/profiles/<name>/


@dg.asset(
    group_name="training",
    kinds={"xgboost", "mlflow"},
    **catalog("training", training, bundle_models, compile_model, mlflow_tracking),
)
@timed
def candidate_model(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    training_set: pd.DataFrame,
    sentinel_home: SentinelHome,
    policy: GovernancePolicy,
) -> dg.Output[dict[str, Any]]:
    """XGBoost with early stopping, compiled to ONNX (parity-checked), logged to MLflow: the
    full model, and one per request profile of the policy on exactly its features."""
    home = sentinel_home.root()
    split = from_frame(training_set)
    params = TrainParams(**config.model_dump())
    full = train_and_compile(split, params)
    model, gap = full.trained, full.parity_max_abs_diff
    profiles = [train_and_compile(split, params, p) for p in policy.load().profiles()]
    data_fingerprint = fingerprint(training_set)
    run_name = f"candidate_model-{context.run.run_id[:8]}"
    tags = mlflow_tracking.run_tags(data_fingerprint, context.run.run_id)
    with mlflow_tracking.training_run(home, run_name, tags) as run:
        model_dir = home / "candidates" / run.info.run_id
        full.save(model_dir)
        mlflow.log_params(config.model_dump())
        # `label`: the labels known at the holdout start, which training was taught.
        mlflow_tracking.log_split(
            split,
            list(FEATURE_NAMES),
            LABEL_COLUMN,
            "training_set",
            str(paths.asset_path(home, "training_set")),
        )
        mlflow.log_metrics(
            {
                "validation_pr_auc": model.validation_pr_auc,
                "best_iteration": model.best_iteration,
                "threshold": model.threshold,
                "onnx_parity_max_abs_diff": gap,
            }
        )
        for m in profiles:
            name = m.profile.name
            m.save(model_dir / PROFILES_DIR / name)
            mlflow.log_metrics(
                {
                    f"{name}.validation_pr_auc": m.trained.validation_pr_auc,
                    f"{name}.threshold": m.threshold,
                    f"{name}.onnx_parity_max_abs_diff": m.parity_max_abs_diff,
                }
            )
            mlflow.log_artifacts(str(model_dir / PROFILES_DIR / name), f"{PROFILES_DIR}/{name}")
        model_version = mlflow_tracking.log_models(full, split.train.frame)
    result = {
        "run_id": run.info.run_id,
        "model_dir": str(model_dir),
        "mlflow_model_version": model_version,
        "threshold": model.threshold,
        "best_iteration": model.best_iteration,
        "onnx_parity_max_abs_diff": gap,
        "data_fingerprint": data_fingerprint,
        "params": config.model_dump(),
        "profiles": {
            m.profile.name: {
                **m.summary(),
                "model_dir": str(model_dir / PROFILES_DIR / m.profile.name),
            }
            for m in profiles
        },
    }
    return dg.Output(
        result,
        metadata={
            "profiles": dg.MetadataValue.json(
                {
                    name: {k: v for k, v in p.items() if k != "model_dir"}
                    for name, p in result["profiles"].items()
                }
            ),
            "mlflow_run_id": run.info.run_id,
            "mlflow_model_version": result["mlflow_model_version"],
            "best_iteration": model.best_iteration,
            "threshold": model.threshold,
            "validation_pr_auc": model.validation_pr_auc,
            "onnx_parity_max_abs_diff": gap,
            "scale_pos_weight": model.scale_pos_weight,
        },
    )


class EvaluationConfig(dg.Config):
    ablation: bool = Field(
        default=False,
        description="Also run the feature-group ablation in this step (the default lineage "
        "leaves it to the on-demand `feature_ablation` asset: seven retrains).",
    )


@dg.asset(
    group_name="training",
    kinds={"mlflow"},
    **catalog("training", evaluation, plots, reporting, drift_reference),
)
@timed
def candidate_evaluation(
    config: EvaluationConfig,
    sentinel_home: SentinelHome,
    candidate_model: dict[str, Any],
    training_set: pd.DataFrame,
) -> dg.Output[dict[str, Any]]:
    """Holdout metrics of the candidate beside the heuristic fallback's, with plots and
    gain per feature. The feature-group ablation is its own asset, `feature_ablation`."""
    data = from_frame(training_set)
    holdout = data.holdout
    compromised = compromised_before_holdout(data)
    model_dir = Path(candidate_model["model_dir"])
    threshold = candidate_model["threshold"]
    full = evaluate_model(
        (model_dir / "model.onnx").read_bytes(), FULL_MODEL, threshold, holdout, compromised
    )
    model_metrics, heuristic_metrics = full.metrics, full.heuristic
    scores, heuristic = full.scores, full.heuristic_scores
    p50, p99 = full.predict_p50_us, full.predict_p99_us
    profiles = {
        name: {
            "features": p["features"],
            **evaluate_model(
                (Path(p["model_dir"]) / "model.onnx").read_bytes(),
                RequestProfile(name, tuple(p["features"])),
                p["threshold"],
                holdout,
                compromised,
            ).summary(),
        }
        for name, p in candidate_model.get("profiles", {}).items()
    }
    pr_png = pr_curve_png(holdout.labels, {"model": scores, "heuristic": heuristic})
    dist_png = score_distribution_png(holdout.labels, scores, threshold)
    (model_dir / "pr_curve.png").write_bytes(pr_png)
    (model_dir / "score_distribution.png").write_bytes(dist_png)
    # The drift watch's reference, carried by the bundle: the holdout, not the training rows,
    # whose long windows the replay is still filling (monitoring/reference.py).
    reference = build_reference(
        FULL, holdout.frame, FEATURE_NAMES, scores, threshold,
        period_label("holdout", holdout.frame["event_time"]),
    )  # fmt: skip
    (model_dir / DRIFT_REFERENCE_FILE).write_text(json.dumps(reference.to_dict()))
    importance = gain_importance(
        xgb.Booster(model_file=str(model_dir / "model.json")), FEATURE_NAMES
    )
    importance.to_csv(model_dir / "feature_importance.csv", index=False)
    ablated = None
    if config.ablation:
        ablated = candidate_ablation(candidate_model, data, compromised)
    result = {
        "metrics": model_metrics.flat(),
        "heuristic_metrics": heuristic_metrics.flat(),
        "predict_p50_us": p50,
        "predict_p99_us": p99,
        "profiles": profiles,  # each request profile's model, and the heuristic on its requests
        "holdout_rows": len(holdout.frame),
        "holdout_frauds": int(holdout.labels.sum()),
        "known_compromised_cards": len(compromised),
        # Lets `sentinel check-promotion` find the training set this was judged on.
        "data_fingerprint": candidate_model["data_fingerprint"],
        "feature_importance": importance.to_dict("records"),
        "ablation": None if ablated is None else ablated.to_dict("records"),
    }
    evaluation_json = json.dumps(result, indent=2, sort_keys=True)
    (model_dir / "evaluation.json").write_text(evaluation_json)
    (model_dir.parent / "latest_evaluation.json").write_text(evaluation_json)
    mlflow_tracking.use_local_store(sentinel_home.root())  # this step may be its own process
    with mlflow.start_run(run_id=candidate_model["run_id"]):
        mlflow.log_metrics(model_metrics.flat("holdout_"))
        mlflow.log_metrics(heuristic_metrics.flat("heuristic_holdout_"))
        mlflow.log_metrics({"predict_p50_us": p50, "predict_p99_us": p99})
        for name, p in profiles.items():
            mlflow.log_metrics(
                {f"{name}.holdout_{k}": v for k, v in p["metrics"].items()}
                | {f"{name}.heuristic_holdout_{k}": v for k, v in p["heuristic_metrics"].items()}
                | {f"{name}.predict_p99_us": p["predict_p99_us"]}
            )
        mlflow.log_artifact(str(model_dir / "pr_curve.png"))
        mlflow.log_artifact(str(model_dir / "score_distribution.png"))
        mlflow.log_artifact(str(model_dir / "feature_importance.csv"))
        if ablated is not None:
            mlflow.log_artifact(str(model_dir / "ablation.csv"))
    return dg.Output(
        result,
        metadata={
            "pr_auc": model_metrics.pr_auc,
            "recall_at_1pct_fpr": model_metrics.recall_at_1pct_fpr,
            "card_precision_at_100": model_metrics.card_precision_at_100,
            "heuristic_pr_auc": heuristic_metrics.pr_auc,
            "predict_p99_us": p99,
            "metrics": dg.MetadataValue.md(
                metrics_table(
                    {"model": result["metrics"], "heuristic": result["heuristic_metrics"]}
                )
            ),
            "profiles": dg.MetadataValue.md(quality_markdown(models_of(result))),
            "pr_curve": dg.MetadataValue.md(png_markdown("PR curve", pr_png)),
            "score_distribution": dg.MetadataValue.md(png_markdown("scores", dist_png)),
            "known_compromised_cards": len(compromised),
            "feature_importance": dg.MetadataValue.md(frame_markdown(importance, max_rows=15)),
            "ablation": dg.MetadataValue.md(
                "materialize `feature_ablation` (on demand)"
                if ablated is None
                else frame_markdown(ablated)
            ),
        },
    )


@dg.asset(group_name="training", **catalog("training", promotion, champion_score, policy_module))
@timed
def promotion_decision(
    candidate_model: dict[str, Any],
    candidate_evaluation: dict[str, Any],
    training_set: pd.DataFrame,
    sentinel_home: SentinelHome,
    policy: GovernancePolicy,
) -> dg.Output[dict[str, Any]]:
    """The offline gate of the `policy` resource's file (mlops/promotion_policy.yaml unless
    configured): relative to the heuristic and the champion on this holdout, plus any floors.
    Failing is an outcome, not an error."""
    registry = registry_of(sentinel_home)
    try:
        champion = score_on_holdout(registry, training_set, policy.feature_set())
    except BundleError as exc:
        raise dg.Failure(description=f"the champion bundle cannot be loaded: {exc}") from None
    champion_version = champion.version
    decision = decide_bundle(
        models_of(candidate_evaluation),
        policy.load().promotion,
        champion=champion.for_gate(),
        champion_incomparable=champion.incomparable,
    )
    result = {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "candidate_run_id": candidate_model["run_id"],
        "champion_version": champion_version,
    }
    return dg.Output(
        result,
        metadata={
            "passed": decision.passed,
            "candidate_run_id": candidate_model["run_id"],
            "champion_version": champion_version or "none",
            "policy": dg.MetadataValue.path(policy.path),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons) or "-"),
            "checks": dg.MetadataValue.md(decision.markdown()),
        },
    )


def _card_fields(
    model: dict[str, Any], evaluation: dict[str, Any], features: FeatureSet
) -> dict[str, str]:
    metrics, heuristic = evaluation["metrics"], evaluation["heuristic_metrics"]
    scenario = {
        name: metrics[f"recall_{name}"] for name in SCENARIOS if f"recall_{name}" in metrics
    }
    return {
        "compiled_format": "ONNX (onnxruntime)",
        "data_fingerprint": model["data_fingerprint"],
        "code_version": git.code_version(),
        "mlflow_run_id": model["run_id"],
        "feature_set": f"{features.name} v{features.version} ({features.fingerprint()})",
        "label_maturity_days": f"{features.label_maturity_days:g}",
        "features": markdown_table(features),
        "threshold": f"{model['threshold']:.4f}",
        "target_fpr": str(model["params"]["target_fpr"]),
        "metrics_table": metrics_table({"model": metrics, "heuristic": heuristic}),
        "scenario_table": "\n".join(f"- {k}: {v:.3f}" for k, v in scenario.items()) or "-",
        "data_notes": (
            f"Holdout: {evaluation['holdout_rows']:,} payments, {evaluation['holdout_frauds']:,} "
            "frauds. Training and validation labels are those known at the holdout start; the "
            f"last {features.label_maturity_days:g} days before it were left out, too recent "
            "for their chargebacks to have arrived. Never-reported frauds look legitimate to "
            "the model."
        ),
        "profiles": profiles_card_section(model.get("profiles", {}), evaluation),
    }


def profiles_card_section(models: dict[str, Any], evaluation: dict[str, Any]) -> str:
    """The model card's section on each request profile's model."""
    if not models:
        return "None: every request is scored by the full model."
    return "\n".join(
        profile_card_section(
            name,
            m["features"],
            m["threshold"],
            m["onnx_parity_max_abs_diff"],
            evaluation["profiles"][name],
        )
        for name, m in models.items()
    )


def proofs_of(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """Each model's proof rows, as the candidate's folders hold them; None for a candidate
    trained before proofs existed (its bundle is then smoke-tested, as older bundles are)."""
    folders = {FULL: Path(candidate["model_dir"])} | {
        name: Path(p["model_dir"]) for name, p in candidate.get("profiles", {}).items()
    }
    if not all((f / PROOF_FILE).is_file() for f in folders.values()):
        return None
    return {name: json.loads((f / PROOF_FILE).read_text()) for name, f in folders.items()}


def drift_reference_of(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """The candidate's drift reference, as candidate_evaluation wrote it; None for a
    candidate evaluated before references existed (its bundle then carries none)."""
    path = Path(candidate["model_dir"]) / DRIFT_REFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def profile_contents(
    models: dict[str, Any], evaluation: dict[str, Any]
) -> tuple[ProfileContent, ...]:
    """The request profiles' compiled models, for the bundle."""
    contents = []
    for name, model in models.items():
        folder = Path(model["model_dir"])
        contents.append(
            ProfileContent(
                name=name,
                features=tuple(model["features"]),
                model_json=(folder / "model.json").read_bytes(),
                model_onnx=(folder / "model.onnx").read_bytes(),
                threshold=model["threshold"],
                metrics=evaluation["profiles"][name]["metrics"],
                onnx_parity_max_abs_diff=model["onnx_parity_max_abs_diff"],
            )
        )
    return tuple(contents)


@dg.asset(
    group_name="training",
    kinds={"mlflow"},
    # Declarative automation: after a run that decided without publishing (retrain_job,
    # the nightly schedule's), the daemon materializes this; a run that had it is not repeated.
    automation_condition=dg.AutomationCondition.eager(),
    **catalog("training", publishing, bundle),
)
@timed
def model_bundle(
    context: dg.AssetExecutionContext,
    promotion_decision: dict[str, Any],
    candidate_model: dict[str, Any],
    candidate_evaluation: dict[str, Any],
    sentinel_home: SentinelHome,
    policy: GovernancePolicy,
) -> dg.Output[dict[str, Any]]:
    """Publish the candidate as a bundle, only if its promotion decision passed."""
    registry = registry_of(sentinel_home)
    if not promotion_decision["passed"]:
        context.log.info("promotion decision failed: nothing published, champion unchanged")
        return dg.Output(
            {"published": False, "reasons": promotion_decision["reasons"]},
            metadata={"published": False, "champion": registry.pointer("champion") or "none"},
        )
    published = registry.find_run(candidate_model["run_id"])
    if published is not None:  # a sensor and a full run may both reach here: publish once
        return dg.Output(
            {"published": False, "version": published, "reasons": ["already published"]},
            metadata={"published": False, "already_published_as": published},
        )
    try:  # before anything is written: a misconfigured key publishes nothing
        signing_key = signing_key_from_env()
    except SigningKeyError as exc:
        raise dg.Failure(description=f"nothing published, champion unchanged: {exc}") from None
    features = policy.feature_set()
    model_dir = Path(candidate_model["model_dir"])
    content = BundleContent(
        model_json=(model_dir / "model.json").read_bytes(),
        model_onnx=(model_dir / "model.onnx").read_bytes(),
        threshold=candidate_model["threshold"],
        metrics=candidate_evaluation["metrics"],
        data_fingerprint=candidate_model["data_fingerprint"],
        code_version=git.code_version(),
        mlflow_run_id=candidate_model["run_id"],
        mlflow_model_version=candidate_model["mlflow_model_version"],
        lineage={
            "mlflow_run_id": candidate_model["run_id"],
            "dagster_run_id": context.run.run_id,
            "data_fingerprint": candidate_model["data_fingerprint"],
            "params": candidate_model["params"],
            "evaluation": candidate_evaluation,
            "decision": promotion_decision,
        },
        card_fields=_card_fields(candidate_model, candidate_evaluation, features),
        feature_set=features,
        profiles=profile_contents(candidate_model.get("profiles", {}), candidate_evaluation),
        proof=proofs_of(candidate_model),
        drift_reference=drift_reference_of(candidate_model),
    )
    version, role = publish(registry, content, signing_key=signing_key)
    mlflow_tracking.use_local_store(sentinel_home.root())
    mlflow_tracking.record_bundle(
        candidate_model["run_id"], candidate_model["mlflow_model_version"], version
    )
    mlflow_tracking.set_alias(role, candidate_model["mlflow_model_version"])
    return dg.Output(
        {"published": True, "version": version, "role": role},
        metadata={
            "published": True,
            "version": version,
            "role": role,
            # The key's id only (never the key): which public key the service must trust.
            "signed": signing_key is not None,
            "signing_key_id": signing_key.key_id if signing_key else "unsigned",
            "path": dg.MetadataValue.path(str(registry.bundle_dir(version))),
            "manifest": dg.MetadataValue.json(
                json.loads((registry.bundle_dir(version) / "manifest.json").read_text())
            ),
        },
    )
