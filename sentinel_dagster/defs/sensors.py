"""Sensors: Dagster's declarative automation (publishing after a decision, the hourly
report), the promotion of the challenger when the shadow report says so (a sensor of
our own: the run needs the judged pair from the report's metadata), and a retrain when the
drift watch finds the champion drifted and the policy asks for it."""

import datetime as dt

import dagster as dg

from sentinel_dagster.core.policy import DriftPolicy
from sentinel_dagster.defs.jobs import retrain_job
from sentinel_dagster.defs.monitoring import DRIFT_CHECK
from sentinel_dagster.defs.resources import GovernancePolicy
from sentinel_dagster.defs.shadow import promote_job

# The assets Dagster materializes on its own, by their `automation_condition`: model_bundle
# after a passing (or failing) decision made without it, shadow_comparison_report hourly.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.assets("model_bundle", "shadow_comparison_report"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the automation conditions of model_bundle and the shadow report.",
)


def promotion_request(event: dg.EventLogEntry) -> dg.RunRequest | dg.SkipReason:
    """A promotion run for a "promote" verdict, keyed by the report's run; the run promotes
    exactly the pair the report judged."""
    materialization = event.asset_materialization
    metadata = materialization.metadata if materialization is not None else {}
    verdict = metadata.get("verdict")
    if verdict is None or verdict.value != "promote":
        return dg.SkipReason(f"shadow report of run {event.run_id} says hold")
    champion = metadata["champion"].value
    config = {
        "challenger": metadata["challenger"].value,
        "champion": None if champion == "none" else champion,
    }
    return dg.RunRequest(
        run_key=f"promote-{event.run_id}",
        run_config={"ops": {"promote_challenger": {"config": config}}},
    )


@dg.asset_sensor(
    asset_key=dg.AssetKey("shadow_comparison_report"),
    job=promote_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def shadow_promotion_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    return promotion_request(asset_event)


DRIFT_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("champion_drift"), DRIFT_CHECK)
LAUNCHED_BY = "sentinel/launched_by"  # the run tag cli/runner.py sets too (the UI filters)
DRIFT_SENSOR = "drift_retrain_sensor"


def drift_retrain_request(
    run_id: str,
    drifted: bool,
    rules: DriftPolicy,
    last_retrain: dt.datetime | None,
    now: dt.datetime,
) -> dg.RunRequest | dg.SkipReason:
    """A retrain after the drift evaluation of run `run_id`, keyed by that run (one retrain
    per drifted evaluation): only if it found drift, the policy asks for it, and the last
    retrain this sensor launched is at least `retrain_cooldown_hours` old."""
    if not drifted:
        return dg.SkipReason(f"drift evaluation of run {run_id}: no drift")
    if not rules.retrain_on_drift:
        return dg.SkipReason(f"drift found by run {run_id}; drift.retrain_on_drift is false")
    if last_retrain is not None and now - last_retrain < dt.timedelta(
        hours=rules.retrain_cooldown_hours
    ):
        return dg.SkipReason(
            f"drift found by run {run_id}; the last drift retrain started at "
            f"{last_retrain:%Y-%m-%d %H:%M} UTC, within drift.retrain_cooldown_hours"
        )
    return dg.RunRequest(
        run_key=f"drift-retrain-{run_id}",
        tags={LAUNCHED_BY: DRIFT_SENSOR, "sentinel/drift_run": run_id},
    )


@dg.sensor(
    name=DRIFT_SENSOR,
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,  # it acts only if the policy says so
    description="Launches retrain_job after a drifted champion_drift evaluation, when the "
    "policy's drift.retrain_on_drift is true.",
)
def drift_retrain_sensor(
    context: dg.SensorEvaluationContext, policy: GovernancePolicy
) -> dg.RunRequest | dg.SkipReason:
    record = context.instance.get_latest_asset_check_evaluation_record(DRIFT_CHECK_KEY)
    # A planned evaluation (its run still going) has no result yet: wait for it.
    evaluation = record.event.asset_check_evaluation if record and record.event else None
    if record is None or evaluation is None:
        return dg.SkipReason("no finished drift evaluation yet")
    # The cursor is the last evaluation handled: each one is acted on once, not every tick.
    if context.cursor == str(record.id):
        return dg.SkipReason(f"drift evaluation of run {record.run_id} already handled")
    context.update_cursor(str(record.id))
    drifted = evaluation.metadata.get("drifted")
    retrains = context.instance.get_run_records(
        dg.RunsFilter(job_name=retrain_job.name, tags={LAUNCHED_BY: DRIFT_SENSOR}), limit=1
    )
    return drift_retrain_request(
        record.run_id,
        isinstance(drifted, dg.BoolMetadataValue) and bool(drifted.value),
        policy.load().drift,
        retrains[0].create_timestamp if retrains else None,
        dt.datetime.now(dt.UTC),
    )
