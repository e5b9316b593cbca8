"""Dagster resources: where state lives and which governance policy applies.

Both resolve their paths when a run uses them, never at import time, so the same
definitions serve the UI, the CLI and tests with a temporary SENTINEL_HOME.
"""

from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from sentinel_dagster.core import paths
from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from serving.features import FeatureSet


class SentinelHome(dg.ConfigurableResource):
    """The local state root (SENTINEL_HOME)."""

    path: str = Field(default="", description="State root; empty means $SENTINEL_HOME or ./var.")

    def root(self) -> Path:
        return paths.sentinel_home(self.path or None)

    def data_docs_dir(self) -> Path:
        return paths.data_docs_dir(self.root())


class GovernancePolicy(dg.ConfigurableResource):
    """mlops/promotion_policy.yaml (or another policy file)."""

    path: str = Field(default=str(DEFAULT_POLICY_PATH), description="Policy YAML file.")

    def load(self) -> Policy:
        return load_policy(Path(self.path))

    def feature_set(self) -> FeatureSet:
        """The features as this policy's label maturity lags them."""
        return FeatureSet(label_maturity_days=self.load().label_maturity_days)


class FeatureReplayEngine(dg.ConfigurableResource):
    """Which engine replays the log into the training table (README, "Switching the feature
    engine"): both give the same table, bit for bit."""

    engine: Literal["in_process", "spark"] = Field(
        default="in_process",
        description="in_process: one Python process (make run's default). spark: "
        "partitioned by card and by merchant on Spark, for logs one machine cannot replay.",
    )
    master: str = Field(
        default="local[*]", description="Spark master: local[N], spark://host:7077, yarn, ..."
    )
    partitions: int = Field(default=0, description="Partitions per side; 0: twice the cores.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings (spark.executor.memory, ...)."
    )


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame assets as Parquet under SENTINEL_HOME/assets.

    Dagster ships no local-filesystem Parquet IO manager for pandas, and Parquet (unlike the
    default pickles) keeps the typed event schema readable by any tool.
    """

    home: str = Field(default="", description="State root; empty means $SENTINEL_HOME or ./var.")

    def _path(self, key: dg.AssetKey) -> Path:
        return paths.asset_path(paths.sentinel_home(self.home or None), "__".join(key.path))

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        path = self._path(context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        obj.to_parquet(tmp, index=False)
        tmp.replace(path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context.asset_key)
        if not path.exists():
            name = context.asset_key.to_user_string()
            raise dg.Failure(
                description=f"no stored {name} to read: it was never materialized, or its last "
                "materialization was refused by a blocking check (kept under assets/refused/): "
                f"materialize {name} again"
            )
        return pd.read_parquet(path)
