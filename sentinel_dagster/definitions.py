"""The Dagster code location: only combines the definitions made elsewhere."""

import dagster as dg

from sentinel_dagster.assets.data import daily_transaction_stats, transactions
from sentinel_dagster.assets.features import transaction_features
from sentinel_dagster.checks import transaction_features_valid, transactions_expectations
from sentinel_dagster.jobs import main_job
from sentinel_dagster.resources import GovernancePolicy, ParquetIOManager, SentinelHome

defs = dg.Definitions(
    assets=[transactions, daily_transaction_stats, transaction_features],
    asset_checks=[transactions_expectations, transaction_features_valid],
    jobs=[main_job],
    resources={
        "sentinel_home": SentinelHome(),
        "policy": GovernancePolicy(),
        "parquet_io_manager": ParquetIOManager(),
    },
)
