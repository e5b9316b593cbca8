"""MLflow with its SQLite store under SENTINEL_HOME: runs, the model registry and aliases."""

from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

EXPERIMENT = "sentinel_stream_classifier"  # the seed's experiment name
REGISTERED_MODEL = "sentinel-stream-fraud"


def tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def use_local_store(home: Path) -> str:
    """Point MLflow at SENTINEL_HOME and return the experiment id (created on first use)."""
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(home))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifacts = (home / "mlflow" / "artifacts").as_uri()
    return str(mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts))


def set_alias(alias: str, version: str) -> None:
    """Mirror a registry pointer as an alias on the registered model version."""
    MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, version)


def delete_alias(alias: str) -> None:
    """Remove the alias if it is set (nothing to do when the model was never registered)."""
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(REGISTERED_MODEL).aliases or {}
    except MlflowException:
        return
    if alias in aliases:
        client.delete_registered_model_alias(REGISTERED_MODEL, alias)
