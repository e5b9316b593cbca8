"""Schedules: retrain every night."""

import dagster as dg

from sentinel_dagster.jobs import retrain_job

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Retrain at 02:00 UTC; a passing candidate is published by promotion_sensor.",
)
