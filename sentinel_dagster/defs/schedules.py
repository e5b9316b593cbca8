"""Schedules: retrain every night (the hourly shadow report is the asset's own automation
condition)."""

import dagster as dg

from sentinel_dagster.defs.jobs import retrain_job

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,  # the README's "all automation runs"
    description="Retrain at 02:00 UTC; model_bundle's automation condition publishes a pass.",
)
