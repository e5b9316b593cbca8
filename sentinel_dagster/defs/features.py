"""Feature assets (group `features`): the training feature table, replayed by the serving engine."""

import dagster as dg
import pandas as pd

from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.resources import FeatureReplayEngine, GovernancePolicy, SentinelHome
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.features import feature_replay, partitioned_replay, spark_replay
from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.reporting.markdown import frame_markdown
from serving import feature_engine, features
from serving.feature_engine import EngineConfig
from serving.features import FEATURES


def feature_profile(table: pd.DataFrame) -> pd.DataFrame:
    """Per feature: entity, window, null rate and mean — what a reviewer looks at first."""
    return pd.DataFrame(
        {
            "feature": [f.name for f in FEATURES],
            "entity": [str(f.entity) for f in FEATURES],
            "window_h": [f.window_s / 3600 if f.window_s else None for f in FEATURES],
            "null_rate": [float(table[f.name].isna().mean()) for f in FEATURES],
            "mean": [float(table[f.name].mean()) for f in FEATURES],
        }
    )


@dg.asset(
    group_name="features",
    io_manager_key="parquet_io_manager",
    kinds={"pandas", "parquet"},
    **catalog(
        "features",
        feature_replay,
        partitioned_replay,
        spark_replay,
        feature_engine,
        features,
        card_data=True,
    ),
)
@timed
def transaction_features(
    context: dg.AssetExecutionContext,
    transactions: pd.DataFrame,
    policy: GovernancePolicy,
    feature_engine: FeatureReplayEngine,
    sentinel_home: SentinelHome,
) -> dg.Output[pd.DataFrame]:
    """One feature vector per transaction: the event log replayed through the serving engine,
    in this process or on Spark (`feature_engine`)."""
    features = policy.feature_set()
    config = EngineConfig(features=features)
    if feature_engine.engine == "spark":
        scratch = sentinel_home.root() / "spark" / context.run_id
        table, run = spark_replay.spark_replay_frame(
            transactions, config, scratch, master=feature_engine.master,
            partitions=feature_engine.partitions, conf=feature_engine.spark_conf,
            on_start=lambda s: context.log.info(f"Spark UI: {s.sparkContext.uiWebUrl}"),
        )  # fmt: skip
        engine_metadata = run.metadata()
    else:
        result = replay(transactions, config)
        table, stats = result.table, result.engine.stats()
        engine_metadata = {
            "engine": "in_process",
            "partitions": 1,
            "seconds": round(result.seconds, 2),
            "events_per_second": round(len(table) / max(result.seconds, 1e-9)),
            "labels_applied": stats["labels_applied"],
            "duplicates": stats["duplicates"],
            "too_late": stats["too_late"],
        }
    return dg.Output(
        table,
        metadata={
            "rows": len(table),
            "features": len(FEATURES),
            "feature_set": f"{features.name} v{features.version}",
            "label_maturity_days": features.label_maturity_days,
            **engine_metadata,
            "profile": dg.MetadataValue.md(frame_markdown(feature_profile(table), 40)),
        },
    )
