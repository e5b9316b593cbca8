"""Analysis assets (group `analysis`), materialized on demand, outside the default lineage.

`feature_ablation` retrains the latest candidate without each feature group: seven
retrains that took half of the default lineage's time, for a table a person reads now and
then rather than a figure the gate needs. Materialize it from the UI or with
`sentinel materialize --select feature_ablation`.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd

from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.resources import SentinelHome
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.features import feature_importance
from sentinel_dagster.features.feature_importance import ABLATION_TRAIN_ROWS, ablation
from sentinel_dagster.reporting.markdown import frame_markdown
from sentinel_dagster.training import mlflow_tracking
from sentinel_dagster.training import xgboost_candidate as training
from sentinel_dagster.training.evaluation import compromised_before_holdout
from sentinel_dagster.training.training_data import TrainingSet, from_frame
from sentinel_dagster.training.xgboost_candidate import TrainParams
from serving.features import feature_groups


class AblationConfig(dg.Config):
    max_train_rows: int = ABLATION_TRAIN_ROWS  # each retrain's sample, every positive kept


def candidate_ablation(
    candidate_model: dict[str, Any],
    data: TrainingSet,
    compromised: frozenset[str],
    max_train_rows: int = ABLATION_TRAIN_ROWS,
) -> pd.DataFrame:
    """The candidate's training, without each feature group in turn; written beside the
    candidate's model as `ablation.csv`."""
    params = TrainParams(**candidate_model["params"])
    table = ablation(data, params, feature_groups(), compromised, max_train_rows)
    table.to_csv(Path(candidate_model["model_dir"]) / "ablation.csv", index=False)
    return table


@dg.asset(
    group_name="analysis",
    kinds={"xgboost", "mlflow"},
    **catalog("analysis", feature_importance, training),
)
@timed
def feature_ablation(
    config: AblationConfig,
    sentinel_home: SentinelHome,
    candidate_model: dict[str, Any],
    training_set: pd.DataFrame,
) -> dg.Output[list[dict[Any, Any]]]:
    """Holdout metrics the candidate loses without each feature group (retrained on a
    sample of its training rows), logged to the candidate's MLflow run."""
    data = from_frame(training_set)
    compromised = compromised_before_holdout(data)
    table = candidate_ablation(candidate_model, data, compromised, config.max_train_rows)
    mlflow_tracking.use_local_store(sentinel_home.root())  # this run may be its own process
    with mlflow.start_run(run_id=candidate_model["run_id"]):
        mlflow.log_artifact(str(Path(candidate_model["model_dir"]) / "ablation.csv"))
    return dg.Output(
        table.to_dict("records"),
        metadata={
            "candidate_run_id": candidate_model["run_id"],
            "ablation": dg.MetadataValue.md(frame_markdown(table)),
        },
    )
