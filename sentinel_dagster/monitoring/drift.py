"""The drift watch: is the champion still seeing the traffic it was judged on?

Reads the service's scored-event log (`SENTINEL_HOME/scored/scored-*.jsonl`) of the last
`window_hours`, keeps the events of the current champion answered by the model its drift
reference describes (reference.py: the full model, or a profile's in a bundle without one),
and compares them with that reference:

- per feature: PSI of the live feature vectors against the reference bins. Only a share of
  events is logged with its vector (`features`, the service's SENTINEL_LOG_FEATURES);
- the champion's scores: PSI against its holdout scores;
- its decline rate at its threshold, on the events it decided (a canary share of traffic is
  decided by the challenger: `decided_by`), against its holdout's.

Each comparison is judged only on at least `min_events` events of its own; past a bound of
the policy's `drift:` section it is a warning. Nothing here blocks or moves a model.
"""

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentinel_dagster.core.policy import DriftPolicy
from sentinel_dagster.monitoring.reference import DriftReference, read_reference
from sentinel_dagster.shadow.shadow_report import read_log
from serving.features import FEATURE_INDEX, FEATURE_NAMES
from serving.registry import Registry

HOUR = 3_600.0
# What a drift evaluation concluded: only DRIFTED is a warning about the model's traffic.
NO_CHAMPION, NO_REFERENCE, TOO_FEW_EVENTS = "no_champion", "no_reference", "too_few_events"
STABLE, DRIFTED = "stable", "drifted"
CHAMPION = "champion"  # `decided_by` of the events the champion decided (the field's default)


@dataclass(frozen=True)
class LiveTraffic:
    """The champion's events in the window, as the comparisons need them."""

    events: int  # all of the champion's events, one per transaction
    scores: np.ndarray  # the reference's model's scores, on the events that model answered
    declined: np.ndarray  # bool, of those events the champion decided: score >= threshold
    features: np.ndarray  # (events logged with their vector, FEATURE_NAMES), NaN: missing
    other_models: int  # events another of the champion's models answered (a profile's)


def _empty_traffic() -> LiveTraffic:
    return LiveTraffic(0, np.zeros(0), np.zeros(0, bool), np.zeros((0, len(FEATURE_NAMES))), 0)


def _column(frame: pd.DataFrame, name: str, default: object) -> pd.Series:
    """A column, or `default` on every row for logs written before the field existed."""
    return frame[name] if name in frame else pd.Series(default, index=frame.index)


def live_traffic(scored: pd.DataFrame, champion: str, model: str, since: float) -> LiveTraffic:
    """The events of the scored-event log `scored` that `champion` scored at or after `since`
    (unix seconds of `scored_at`; `event_time` for lines without it), as far as `model`
    (the reference's) answered them."""
    if scored.empty or "champion_version" not in scored:
        return _empty_traffic()
    clock = "scored_at" if "scored_at" in scored else "event_time"
    when = pd.to_numeric(scored[clock], errors="coerce")  # a garbled time: not in the window
    mine = scored[(scored["champion_version"] == champion) & (when >= since)]
    if "transaction_id" in mine:  # several processes' files: the latest scoring wins
        mine = mine.sort_values(clock, kind="stable")
        # only among events with an id: every event sent without one is an event of its own
        has_id = mine["transaction_id"].notna()
        once = ~mine.duplicated("transaction_id", keep="last") | ~has_id
        mine = mine[once]
    answered = _column(mine, "champion_score", np.nan).notna()
    by_model = _column(mine, "profile", model) == model
    ours = mine[answered & by_model]
    chosen = ours[_column(ours, "decided_by", CHAMPION).fillna(CHAMPION) == CHAMPION]
    thresholds = _column(chosen, "champion_threshold", np.nan).to_numpy(float)
    vectors = [
        v
        for v in _column(ours, "features", None)
        if isinstance(v, list) and len(v) == len(FEATURE_NAMES)
    ]
    return LiveTraffic(
        events=len(mine),
        scores=_column(ours, "champion_score", np.nan).to_numpy(float),
        declined=_column(chosen, "champion_score", np.nan).to_numpy(float) >= thresholds,
        # null (a NaN feature, as the service writes it) becomes NaN again
        features=np.array(vectors, dtype=float).reshape(len(vectors), len(FEATURE_NAMES)),
        other_models=int((answered & ~by_model).sum()),
    )


@dataclass
class DriftReport:
    champion: str | None
    status: str
    message: str
    window_hours: float = 0.0
    events: int = 0  # the champion's events in the window
    score_events: int = 0  # answered by the reference's model
    decline_events: int = 0  # of those, decided by the champion
    feature_events: int = 0  # of those, logged with their feature vector
    other_model_events: int = 0
    reference_model: str | None = None
    reference_rows: int = 0
    reference_from: str | None = None
    feature_psi: dict[str, float] = field(default_factory=dict)
    score_psi: float | None = None
    decline_rate_live: float | None = None
    decline_rate_reference: float | None = None
    decline_rate_change: float | None = None  # live minus reference
    decline_rate_relative_change: float | None = None  # that change over the reference
    drifted_features: list[str] = field(default_factory=list)  # worst first
    warnings: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)  # comparisons without enough events

    @property
    def drifted(self) -> bool:
        return self.status == DRIFTED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, now: float) -> dict[str, Any]:
        """What the scoring service exports to Prometheus (serving/drift_metrics.py)."""
        return {
            "generated_at": now,
            "champion_version": self.champion,
            "status": self.status,
            "drifted": self.drifted,
            "events": self.events,
            "score_events": self.score_events,
            "feature_events": self.feature_events,
            "window_hours": self.window_hours,
            "feature_psi": self.feature_psi,
            "score_psi": self.score_psi,
            "decline_rate_live": self.decline_rate_live,
            "decline_rate_reference": self.decline_rate_reference,
            "decline_rate_change": self.decline_rate_change,
        }


def _points(rate: float) -> str:
    return f"{rate * 100:+.2f} points"


def judge_drift(
    reference: DriftReference, live: LiveTraffic, rules: DriftPolicy, champion: str
) -> DriftReport:
    """Each comparison with enough events against the policy's bounds."""
    report = DriftReport(
        champion=champion,
        status=STABLE,
        message="",
        window_hours=rules.window_hours,
        events=live.events,
        score_events=len(live.scores),
        decline_events=len(live.declined),
        feature_events=len(live.features),
        other_model_events=live.other_models,
        reference_model=reference.model,
        reference_rows=reference.rows,
        reference_from=reference.computed_from,
        decline_rate_reference=reference.decline_rate,
    )
    need = rules.min_events
    unknown = [name for name in reference.features if name not in FEATURE_INDEX]
    if unknown:
        report.not_judged.append(f"features this code does not compute: {', '.join(unknown)}")
    if report.feature_events >= need:
        report.feature_psi = {
            name: bins.psi(live.features[:, FEATURE_INDEX[name]])
            for name, bins in reference.features.items()
            if name in FEATURE_INDEX
        }
    else:
        report.not_judged.append(
            f"features: {report.feature_events} events logged with their feature vector, "
            f"{need} needed (the service logs a SENTINEL_LOG_FEATURES share of events with it)"
        )
    if report.score_events >= need:
        report.score_psi = reference.scores.psi(live.scores)
    else:
        report.not_judged.append(f"scores: {report.score_events} events, {need} needed")
    if report.decline_events >= need:
        rate = float(np.mean(live.declined))
        report.decline_rate_live = rate
        report.decline_rate_change = rate - reference.decline_rate
        if reference.decline_rate > 0:
            report.decline_rate_relative_change = (
                report.decline_rate_change / reference.decline_rate
            )
    else:
        report.not_judged.append(
            f"decline rate: {report.decline_events} events decided by the champion, {need} needed"
        )
    _warn(report, rules)
    if report.warnings:
        report.status = DRIFTED
        report.message = "drifted: " + "; ".join(report.warnings)
    elif report.feature_psi or report.score_psi is not None or report.decline_rate_live is not None:
        report.message = "within policy: " + _within(report)
    else:
        report.status = TOO_FEW_EVENTS
        report.message = (
            f"too few events to judge in the last {rules.window_hours:g} h: "
            f"{report.score_events} scored by the champion's {reference.model} model, "
            f"{report.feature_events} of them logged with features; {need} needed"
        )
    if report.not_judged and report.status != TOO_FEW_EVENTS:
        report.message += " (not judged: " + "; ".join(report.not_judged) + ")"
    return report


def _warn(report: DriftReport, rules: DriftPolicy) -> None:
    over = {n: v for n, v in report.feature_psi.items() if v > rules.max_feature_psi}
    report.drifted_features = sorted(over, key=lambda n: -over[n])
    for name in report.drifted_features:
        report.warnings.append(f"{name} PSI {over[name]:.3f} > {rules.max_feature_psi:g}")
    if report.score_psi is not None and report.score_psi > rules.max_score_psi:
        report.warnings.append(f"score PSI {report.score_psi:.3f} > {rules.max_score_psi:g}")
    change = report.decline_rate_change
    if change is not None and abs(change) > rules.max_decline_rate_change:
        live, reference = report.decline_rate_live or 0.0, report.decline_rate_reference or 0.0
        report.warnings.append(
            f"decline rate {live:.2%} against {reference:.2%} on the holdout "
            f"({_points(change)}, bound {rules.max_decline_rate_change * 100:g} points)"
        )


def _within(report: DriftReport) -> str:
    parts = []
    if report.feature_psi:
        worst = max(report.feature_psi, key=lambda n: report.feature_psi[n])
        parts.append(f"largest feature PSI {report.feature_psi[worst]:.3f} ({worst})")
    if report.score_psi is not None:
        parts.append(f"score PSI {report.score_psi:.3f}")
    if report.decline_rate_change is not None:
        parts.append(f"decline rate {_points(report.decline_rate_change)}")
    return ", ".join(parts)


@dataclass(frozen=True)
class DriftWatch:
    """One evaluation: its report, and the reference and traffic it compared (for plots)."""

    report: DriftReport
    reference: DriftReference | None = None
    live: LiveTraffic | None = None


def watch(home: Path, rules: DriftPolicy, now: float) -> DriftWatch:
    """The champion of the registry under `home` against its bundle's drift reference, on
    the scored-event log of the `window_hours` before `now` (unix seconds).
    DriftReferenceError if the champion's reference is present but unusable."""
    registry = Registry(home / "registry")
    champion = registry.pointer("champion")
    if champion is None:
        message = "no champion to watch: none published"
        return DriftWatch(DriftReport(None, NO_CHAMPION, message, window_hours=rules.window_hours))
    reference = read_reference(registry.bundle_dir(champion))
    if reference is None:
        message = (
            f"no drift reference: republish. The champion {champion} was published before "
            "bundles carried drift_reference.json; the next bundle the lineage publishes "
            "carries one"
        )
        report = DriftReport(champion, NO_REFERENCE, message, window_hours=rules.window_hours)
        return DriftWatch(report)
    since = now - rules.window_hours * HOUR
    first_day = dt.datetime.fromtimestamp(since, dt.UTC).date()  # files are per UTC day
    scored = read_log(home / "scored", "scored", first_day)
    live = live_traffic(scored, champion, reference.model, since)
    return DriftWatch(judge_drift(reference, live, rules, champion), reference, live)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Replace the summary file atomically: the service may read it at any moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False))
    os.replace(tmp, path)
