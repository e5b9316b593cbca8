"""Sensors: Dagster's declarative automation (publishing after a decision, the hourly
report), and the promotion of the challenger when the shadow report says so (a sensor of
our own: the run needs the judged pair from the report's metadata)."""

import dagster as dg

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
