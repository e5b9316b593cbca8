"""Schedules: retrain every night; refresh the shadow comparison every hour."""

import dagster as dg

from sentinel_dagster.defs.jobs import retrain_job, shadow_report_job

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,  # the README's "all automation runs"
    description="Retrain at 02:00 UTC; a passing candidate is published by promotion_sensor.",
)

shadow_report_schedule = dg.ScheduleDefinition(
    name="shadow_report_schedule",
    job=shadow_report_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly shadow comparison; a 'promote' verdict triggers shadow_promotion_sensor.",
)
