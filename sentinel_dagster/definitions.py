"""The Dagster code location, as a `dg` project: every definition in `sentinel_dagster/defs/`
(assets, checks, jobs, schedules, sensors) is loaded by Dagster's own autoloading, and the
resources are bound here, so that the CLI and tests can pin SENTINEL_HOME."""

import dagster as dg

import sentinel_dagster.defs
from sentinel_dagster.defs.resources import GovernancePolicy, ParquetIOManager, SentinelHome


def resources(home: str = "") -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:
    """`home` pins SENTINEL_HOME (empty: $SENTINEL_HOME or ./var when a run uses it)."""
    return {
        "sentinel_home": SentinelHome(path=home),
        "policy": GovernancePolicy(),
        "parquet_io_manager": ParquetIOManager(home=home),
    }


def build_defs(home: str = "") -> dg.Definitions:
    """All definitions of the defs folder, with the resources for `home`."""
    return dg.load_defs(sentinel_dagster.defs).with_resources(resources(home))


defs = build_defs()
