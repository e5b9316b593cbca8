"""Group `monitoring`: the drift watch. The champion's live inputs and scores, from the
service's scored-event log, against the reference its bundle carries (monitoring/drift.py).

A drifted champion is a warning: the check fails with WARN severity and blocks nothing.
`drift_watch_schedule` runs it hourly; `drift_retrain_sensor` (sensors.py) launches
`retrain_job` after a drifted evaluation when the policy's `drift.retrain_on_drift` says so.
"""

import time
from typing import Any

import dagster as dg

from sentinel_dagster.core import paths, stability
from sentinel_dagster.core.policy import DriftPolicy
from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.monitoring import drift, drift_views, reference
from sentinel_dagster.monitoring.drift import DRIFTED, NO_CHAMPION, STABLE, TOO_FEW_EVENTS
from sentinel_dagster.monitoring.reference import DriftReferenceError
from sentinel_dagster.reporting import plots
from sentinel_dagster.reporting.plots import png_markdown

DRIFT_CHECK = "champion_drift_within_policy"
# The conclusions that are fine as they are; drift, and a champion with no reference to
# compare with (republish), are warnings.
_PASSING = (STABLE, TOO_FEW_EVENTS, NO_CHAMPION)


@dg.asset(
    group_name="monitoring",
    deps=["model_bundle"],  # in lineage only: it reads the registry's champion and the log
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="champion_drift",
            description="The champion's live feature PSI, score PSI and decline-rate change "
            "are within the policy's `drift:` bounds (a warning otherwise)",
        )
    ],
    **catalog("monitoring", drift, drift_views, reference, stability, plots),
)
@timed
def champion_drift(
    context: dg.AssetExecutionContext, sentinel_home: SentinelHome, policy: GovernancePolicy
) -> dg.MaterializeResult:
    """The champion's live traffic of the last `drift.window_hours` against its bundle's
    drift reference: PSI per feature, score PSI and decline-rate change, judged by the
    policy's `drift:` section. Also written to SENTINEL_HOME/monitoring/drift.json, which
    the scoring service exports to Prometheus."""
    home, rules = sentinel_home.root(), policy.load().drift
    now = time.time()
    try:
        evaluation = drift.watch(home, rules, now)
    except DriftReferenceError as exc:
        raise dg.Failure(description=f"the champion's drift reference is unusable: {exc}") from None
    report = evaluation.report
    summary_path = paths.drift_summary_path(home)
    drift.write_summary(summary_path, report.summary(now))
    metadata: dict[str, Any] = {
        "status": report.status,
        "drifted": report.drifted,
        "champion": report.champion or "none",
        "events": report.events,
        "score_events": report.score_events,
        "feature_events": report.feature_events,
        "decline_events": report.decline_events,
        "summary": dg.MetadataValue.md(drift_views.summary_markdown(report)),
        "feature_psi": dg.MetadataValue.md(
            drift_views.table_markdown(evaluation, rules.max_feature_psi)
        ),
        "summary_path": dg.MetadataValue.path(str(summary_path)),
        "details": dg.MetadataValue.json(report.to_dict()),
    }
    numbers = {
        "score_psi": report.score_psi,
        "max_feature_psi": max(report.feature_psi.values(), default=None),
        "decline_rate_live": report.decline_rate_live,
        "decline_rate_reference": report.decline_rate_reference,
        "decline_rate_change": report.decline_rate_change,
    }  # only those judged: Dagster plots each across materializations
    metadata |= {name: value for name, value in numbers.items() if value is not None}
    png = drift_views.drift_png(evaluation)
    if png is not None:
        metadata["distributions"] = dg.MetadataValue.md(png_markdown("live against reference", png))
    context.log.info(f"champion drift: {report.message}")
    return dg.MaterializeResult(metadata=metadata, check_results=[_check_result(report, rules)])


def _check_result(report: drift.DriftReport, rules: DriftPolicy) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=report.status in _PASSING,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.message,
        metadata={
            "status": report.status,
            "drifted": report.status == DRIFTED,  # what drift_retrain_sensor acts on
            "drifted_features": dg.MetadataValue.md(", ".join(report.drifted_features) or "none"),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in report.warnings) or "-"),
            "max_feature_psi": rules.max_feature_psi,
            "max_score_psi": rules.max_score_psi,
            "max_decline_rate_change": rules.max_decline_rate_change,
        },
    )
