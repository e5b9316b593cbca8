"""What the MLflow store records beyond the lineage's runs: the experiment's kind, the run
tags when git is absent, and the cheap dataset schema and digest."""

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentinel_dagster.core import git
from sentinel_dagster.training import mlflow_tracking, training_data


def test_the_experiment_is_classic_ml_unless_someone_chose_its_kind(sentinel_home: Path) -> None:
    kind = mlflow_tracking.EXPERIMENT_KIND_TAG
    experiment = mlflow_tracking.use_local_store(sentinel_home)
    client = MlflowClient()

    def tagged() -> str | None:
        return client.get_experiment(experiment).tags.get(kind)

    assert tagged() == "custom_model_development"  # created with it
    client.delete_experiment_tag(experiment, kind)  # a store from before the tag
    assert mlflow_tracking.use_local_store(sentinel_home) == experiment
    assert tagged() == "custom_model_development"
    for guessed in ("genai_development_inferred", "no_inferred_type"):  # what the UI stores
        client.set_experiment_tag(experiment, kind, guessed)
        mlflow_tracking.use_local_store(sentinel_home)
        assert tagged() == "custom_model_development", guessed
    client.set_experiment_tag(experiment, kind, "genai_development")  # chosen in the UI
    mlflow_tracking.use_local_store(sentinel_home)
    assert tagged() == "genai_development"


def test_without_git_the_run_has_no_commit_tag_and_training_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    assert git.commit() is not None  # the tests run in a checkout
    git.commit.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    assert git.commit() is None
    assert git.code_version() == "unknown"
    tags = mlflow_tracking.run_tags("f00d", "dagster-run")
    assert tags == {"data.fingerprint": "f00d", "dagster.run_id": "dagster-run"}
    git.commit.cache_clear()  # the next test's lookup is a real one


def test_the_dataset_schema_sees_a_null_beyond_the_rows_it_types_from() -> None:
    frame = pd.DataFrame(
        {"amount": np.arange(1_000, dtype=np.float32), "label": np.zeros(1_000, dtype=np.int8)}
    )
    frame.loc[999, "amount"] = np.nan  # far past the 100 rows the types come from
    required = {c.name: c.required for c in mlflow_tracking.frame_schema(frame).inputs}
    assert required == {"amount": False, "label": True}
    digest = training_data.content_digest(frame)
    assert digest == training_data.content_digest(frame.copy())
    frame.loc[500, "label"] = 1
    assert training_data.content_digest(frame) != digest
