"""Feature assets (group `features`): the training feature table, replayed by the serving engine."""

import dagster as dg
import pandas as pd

from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.resources import GovernancePolicy
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.features import feature_replay
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
    **catalog("features", feature_replay, feature_engine, features, card_data=True),
)
@timed
def transaction_features(
    transactions: pd.DataFrame, policy: GovernancePolicy
) -> dg.Output[pd.DataFrame]:
    """One feature vector per transaction: the event log replayed through the serving engine."""
    features = policy.feature_set()
    result = replay(transactions, EngineConfig(features=features))
    stats = result.engine.stats()
    return dg.Output(
        result.table,
        metadata={
            "rows": len(result.table),
            "features": len(FEATURES),
            "feature_set": f"{features.name} v{features.version}",
            "label_maturity_days": features.label_maturity_days,
            "seconds": round(result.seconds, 2),
            "events_per_second": round(len(result.table) / max(result.seconds, 1e-9)),
            "labels_applied": stats["labels_applied"],
            "duplicates": stats["duplicates"],
            "too_late": stats["too_late"],
            "profile": dg.MetadataValue.md(frame_markdown(feature_profile(result.table), 40)),
        },
    )
