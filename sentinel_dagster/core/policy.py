"""Reading `mlops/promotion_policy.yaml` into typed, validated sections."""

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentinel_dagster.core.yaml_files import YamlFileError, read_yaml
from serving.features import SEED_FEATURES
from serving.profiles import PRECOMPUTED_7, ProfileError, RequestProfile, declare_profile

DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "mlops" / "promotion_policy.yaml"


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid; the message says which part."""


class RateBounds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float = Field(ge=0.0, le=1.0)
    max: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "RateBounds":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class DataPolicy(BaseModel):
    """What valid training data looks like."""

    model_config = ConfigDict(extra="forbid")
    min_rows: int = Field(default=1, ge=0)
    max_amount: float = Field(default=50_000.0, gt=0)
    earliest_event_time: dt.datetime = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    latest_event_time: dt.datetime | None = None  # None: now, at validation time
    fraud_rate: RateBounds = RateBounds(min=0.001, max=0.05)

    def event_time_bounds(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        latest = self.latest_event_time or now
        return _utc(self.earliest_event_time), _utc(latest)


class PromotionPolicy(BaseModel):
    """The offline gate, judged on comparisons made on the candidate's own holdout.

    By default a candidate must beat the heuristic fallback by `min_uplift_over_heuristic`
    (per metric, candidate minus heuristic), must not fall more than `max_regression` below
    the current champion, and must meet the single-row latency budget. Those comparisons hold
    on any data; absolute `metric_floors` depend on the data (what a good PR-AUC is varies
    with the fraud rate and the fraud itself), so they are empty unless a deployment sets them.
    """

    model_config = ConfigDict(extra="forbid")
    min_uplift_over_heuristic: dict[str, float] = {"pr_auc": 0.05, "recall_at_1pct_fpr": 0.0}
    max_regression: dict[str, float] = {"pr_auc": 0.02, "recall_at_1pct_fpr": 0.03}
    metric_floors: dict[str, float] = {}
    max_predict_p99_us: float = Field(default=200.0, gt=0)
    # Models of the champion ("full" or a request profile) a candidate may come without;
    # any other the champion has, the candidate must have too (the `coverage` check).
    allow_missing_models: list[str] = []


class ShadowPolicy(BaseModel):
    """When live shadow traffic is enough evidence to promote the challenger."""

    model_config = ConfigDict(extra="forbid")
    min_labelled_events: int = Field(default=2_000, ge=1)
    min_fraud_labels: int = Field(default=20, ge=1)
    min_pr_auc_uplift: float = 0.0  # challenger PR-AUC minus champion PR-AUC, at least
    max_flip_rate: float = Field(default=0.05, ge=0.0, le=1.0)  # decisions that differ
    label_maturity_days: float = Field(default=7.0, ge=0.0)  # set from the policy's top level
    target_fpr: float = Field(default=0.01, gt=0.0, lt=1.0)  # for recall at this FPR
    # Events older than the service's lateness window when they arrived were scored without
    # their card's recent history: above this share the comparison is not judged.
    max_too_late_share: float = Field(default=0.1, ge=0.0, le=1.0)
    # PSI of the challenger's scores against the champion's on the same events, at most
    # (None: reported, not judged). See mlops/promotion_policy.yaml for when to set it.
    max_score_psi: float | None = Field(default=None, ge=0.0)


class DriftPolicy(BaseModel):
    """When the champion's live inputs and scores have moved too far from the distribution
    its bundle was judged on (the drift watch, sentinel_dagster/monitoring/drift.py)."""

    model_config = ConfigDict(extra="forbid")
    window_hours: float = Field(default=168.0, gt=0.0)  # live traffic looked at, back from now
    min_events: int = Field(default=500, ge=1)  # per comparison, before it is judged
    max_feature_psi: float = Field(default=0.25, ge=0.0)  # any one of the model's features
    max_score_psi: float = Field(default=0.25, ge=0.0)  # the champion's scores
    # Live decline rate minus the holdout's, in absolute terms, either way.
    max_decline_rate_change: float = Field(default=0.02, ge=0.0, le=1.0)
    retrain_on_drift: bool = False  # drift_retrain_sensor launches retrain_job
    retrain_cooldown_hours: float = Field(default=24.0, ge=0.0)  # between those retrains


class Policy(BaseModel):
    model_config = ConfigDict(extra="allow")  # later sections belong to later stages
    # How long chargebacks take to arrive: it shapes the training split, the label features'
    # windows and when the shadow report counts an unlabelled payment as genuine.
    label_maturity_days: float = Field(default=7.0, ge=0.0, le=365.0)
    data: DataPolicy = DataPolicy()
    promotion: PromotionPolicy = PromotionPolicy()
    shadow: ShadowPolicy = ShadowPolicy()
    drift: DriftPolicy = DriftPolicy()
    # The request profiles trained, gated and published beside the full model: name ->
    # the features such callers send precomputed, without a card (serving/profiles.py).
    request_profiles: dict[str, list[str]] = {PRECOMPUTED_7: list(SEED_FEATURES)}

    @model_validator(mode="after")
    def _profiles_servable(self) -> "Policy":
        try:
            self.profiles()
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return self

    def profiles(self) -> tuple[RequestProfile, ...]:
        return tuple(declare_profile(name, f) for name, f in self.request_profiles.items())

    @model_validator(mode="before")
    @classmethod
    def _one_label_maturity(cls, raw: Any) -> Any:
        """Earlier policies set it under `shadow:`; read it there too, but never two values."""
        if not isinstance(raw, dict) or not isinstance(raw.get("shadow"), dict):
            return raw
        shadow = raw["shadow"]
        if "label_maturity_days" not in shadow:
            return raw
        top = raw.get("label_maturity_days", shadow["label_maturity_days"])
        if top != shadow["label_maturity_days"]:
            raise ValueError("label_maturity_days is set twice, at the top and under shadow")
        return {**raw, "label_maturity_days": top}

    @model_validator(mode="after")
    def _shadow_follows(self) -> "Policy":
        self.shadow.label_maturity_days = self.label_maturity_days
        return self


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def load_policy(path: Path = DEFAULT_POLICY_PATH) -> Policy:
    try:
        raw = read_yaml(path, "policy file")
    except YamlFileError as exc:
        raise PolicyError(str(exc)) from None
    try:
        return Policy.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyError(f"policy file {path} is invalid: {problems}") from None
