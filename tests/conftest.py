"""Shared fixtures: a temporary SENTINEL_HOME and a small simulated dataset."""

from pathlib import Path

import pandas as pd
import pytest

from sentinel_dagster.simulation.simulator import SimulationParams, simulate_to_parquet

SMALL = SimulationParams(cards=600, days=28, seed=11)


@pytest.fixture(autouse=True)
def sentinel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state root; nothing touches ./var."""
    home = tmp_path / "sentinel_home"
    monkeypatch.setenv("SENTINEL_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "False")
    return home


@pytest.fixture(scope="session")
def small_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.parquet"
    simulate_to_parquet(SMALL, path)
    return path


@pytest.fixture(scope="session")
def small_frame(small_parquet: Path) -> pd.DataFrame:
    return pd.read_parquet(small_parquet)
