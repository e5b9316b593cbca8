"""The Dagster code location: only combines the definitions made elsewhere."""

import dagster as dg

from sentinel_dagster.assets.analysis import feature_ablation
from sentinel_dagster.assets.data import daily_transaction_stats, transactions
from sentinel_dagster.assets.features import transaction_features
from sentinel_dagster.assets.shadow import promote_job, rollback_job, shadow_comparison_report
from sentinel_dagster.assets.training import (
    candidate_evaluation,
    candidate_model,
    model_bundle,
    promotion_decision,
    training_set,
)
from sentinel_dagster.checks import transaction_features_valid, transactions_expectations
from sentinel_dagster.jobs import main_job, publish_job, retrain_job, shadow_report_job
from sentinel_dagster.resources import GovernancePolicy, ParquetIOManager, SentinelHome
from sentinel_dagster.schedules import nightly_retrain_schedule, shadow_report_schedule
from sentinel_dagster.sensors import promotion_sensor, shadow_promotion_sensor


def build_defs(home: str = "") -> dg.Definitions:
    """All definitions; `home` pins SENTINEL_HOME (empty: $SENTINEL_HOME or ./var at run time)."""
    return dg.Definitions(
        assets=[
            transactions,
            daily_transaction_stats,
            transaction_features,
            training_set,
            candidate_model,
            candidate_evaluation,
            promotion_decision,
            model_bundle,
            shadow_comparison_report,
            feature_ablation,
        ],
        asset_checks=[transactions_expectations, transaction_features_valid],
        jobs=[main_job, retrain_job, publish_job, shadow_report_job, promote_job, rollback_job],
        schedules=[nightly_retrain_schedule, shadow_report_schedule],
        sensors=[promotion_sensor, shadow_promotion_sensor],
        resources={
            "sentinel_home": SentinelHome(path=home),
            "policy": GovernancePolicy(),
            "parquet_io_manager": ParquetIOManager(home=home),
        },
    )


defs = build_defs()
