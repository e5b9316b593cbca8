"""Schedules: retrain every night, watch the champion for drift every hour (the hourly
shadow report is the asset's own automation condition)."""

import dagster as dg

from sentinel_dagster.defs.jobs import drift_watch_job, retrain_job

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,  # the README's "all automation runs"
    description="Retrain at 02:00 UTC; model_bundle's automation condition publishes a pass.",
)

drift_watch_schedule = dg.ScheduleDefinition(
    name="drift_watch_schedule",
    job=drift_watch_job,
    cron_schedule="45 * * * *",  # away from the shadow report's :15 and the retrain's 02:00
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :45 UTC: champion_drift against the policy's `drift:` bounds.",
)
