"""Sensors: publish a candidate when its promotion decision passes."""

import dagster as dg

from sentinel_dagster.jobs import publish_job


def publish_request(event: dg.EventLogEntry) -> dg.RunRequest | dg.SkipReason:
    """One run request per passing decision, keyed by the run that made the decision."""
    materialization = event.asset_materialization
    passed = materialization.metadata.get("passed") if materialization is not None else None
    if passed is None or passed.value is not True:
        return dg.SkipReason(f"promotion decision of run {event.run_id} did not pass")
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
    return publish_request(asset_event)
