"""A stream whose chargebacks all arrive exactly 7 days late goes through the default lineage."""

import json
from pathlib import Path

import pandas as pd
import pytest

from sentinel_dagster.cli.runner import RunReport, materialize_lineage
from sentinel_dagster.training.training_data import from_frame
from serving.models import ModelManager
from serving.registry import Registry
from serving.settings import ServiceSettings

FIXED_DELAY = {"cards": 1_500, "days": 40, "seed": 5, "label_delay_days": 7.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunReport]:
    home = tmp_path_factory.mktemp("fixed_delay")
    config = {"ops": {"transactions": {"config": FIXED_DELAY}}}
    return home, materialize_lineage(None, config, home)  # main_job, default split and policy


def test_the_default_lineage_publishes_a_champion(run: tuple[Path, RunReport]) -> None:
    home, report = run
    assert report.success, report.failure
    assert report.published is not None and report.published.endswith("as champion")
    registry = Registry(home / "registry")
    version = registry.pointer("champion")
    manifest = json.loads((registry.bundle_dir(version or "") / "manifest.json").read_text())
    assert manifest["feature_set"]["label_maturity_days"] == 7.0
    # The service with its default label maturity loads it.
    manager = ModelManager(ServiceSettings(home=home))
    manager.reload()
    assert manager.current.champion is not None
    assert manager.current.champion.version == version


def test_no_reported_fraud_is_taught_as_genuine(run: tuple[Path, RunReport]) -> None:
    home, _ = run
    split = from_frame(pd.read_parquet(home / "assets" / "training_set.parquet"))
    for period in (split.train, split.validation):
        reported = (period.frame["is_fraud"] == 1) & period.frame["label_time"].notna()
        assert reported.sum() > 0
        assert (period.labels[reported.to_numpy()] == 1).all(), period.name


def test_lagged_merchant_windows_are_alive(run: tuple[Path, RunReport]) -> None:
    home, _ = run
    table = pd.read_parquet(home / "assets" / "transaction_features.parquet")
    late = table[table["event_time"] >= table["event_time"].min() + pd.Timedelta(days=20)]
    # The 7-day window that ends now sees no label yet; the lagged one sees them all.
    assert late["merchant_fraud_count_7d"].max() == 0
    assert late["merchant_fraud_count_7d_lagged"].sum() > 0
