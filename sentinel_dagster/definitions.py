"""The Dagster code location, as a `dg` project: every definition in `sentinel_dagster/defs/`
(assets, checks, jobs, schedules, sensors) is loaded by Dagster's own autoloading, and the
resources are bound here, so that the CLI and tests can pin SENTINEL_HOME."""

import os

import dagster as dg

import sentinel_dagster.defs
from sentinel_dagster.defs.resources import (
    FeatureReplayEngine,
    GovernancePolicy,
    ParquetIOManager,
    SentinelHome,
)


def resources(home: str = "") -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:
    """`home` pins SENTINEL_HOME (empty: $SENTINEL_HOME or ./var when a run uses it)."""
    return {
        "sentinel_home": SentinelHome(path=home),
        "policy": GovernancePolicy(),
        "parquet_io_manager": ParquetIOManager(home=home),
        # The environment picks the default; the launchpad can override it per run.
        "feature_engine": FeatureReplayEngine(
            engine=os.environ.get("SENTINEL_FEATURE_ENGINE", "in_process"),  # type: ignore[arg-type]
            master=os.environ.get("SENTINEL_SPARK_MASTER", "local[*]"),
        ),
    }


def build_defs(home: str = "") -> dg.Definitions:
    """All definitions of the defs folder, with the resources for `home`."""
    return dg.load_defs(sentinel_dagster.defs).with_resources(resources(home))


defs = build_defs()
