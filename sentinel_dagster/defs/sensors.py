"""Sensors: publish a candidate when its promotion decision passes; promote the challenger
when the shadow report says so."""

import dagster as dg

from sentinel_dagster.defs.jobs import publish_job
from sentinel_dagster.defs.shadow import promote_job

BUNDLE_STEP = "model_bundle"


def publishes_itself(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run that made the decision also has the `model_bundle` step in its plan
    (main_job, `sentinel materialize`, a selection with it): it publishes then, and a
    publish run would only repeat it."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.execution_plan_snapshot_id is None:
        return False
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return any(step.key == BUNDLE_STEP for step in plan.steps)


def publish_request(
    event: dg.EventLogEntry, instance: dg.DagsterInstance
) -> dg.RunRequest | dg.SkipReason:
    """One run request per passing decision, keyed by the run that made the decision,
    unless that run publishes the bundle itself."""
    materialization = event.asset_materialization
    passed = materialization.metadata.get("passed") if materialization is not None else None
    if passed is None or passed.value is not True:
        return dg.SkipReason(f"promotion decision of run {event.run_id} did not pass")
    if publishes_itself(instance, event.run_id):
        return dg.SkipReason(f"run {event.run_id} publishes the bundle itself")
    return dg.RunRequest(run_key=f"publish-{event.run_id}")


@dg.asset_sensor(
    asset_key=dg.AssetKey("promotion_decision"),
    job=publish_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def promotion_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    return publish_request(asset_event, context.instance)


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
