"""The replay split by card and merchant, in one process and on Spark: the table of the
one-process replay, every feature bit for bit, on logs built to break it."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, load_policy
from sentinel_dagster.data.dataset import write_parquet_frame
from sentinel_dagster.features import partitioned_replay as plan
from sentinel_dagster.features.feature_replay import SharedIds, replay
from sentinel_dagster.features.partitioned_replay import partitioned_replay, side_features
from serving.feature_engine import EngineConfig
from serving.features import FeatureSet
from tests.sentinel_dagster.event_logs import random_log
from tests.serving.test_feature_kernels import random_feature_set


def assert_same_table(expected: pd.DataFrame, got: pd.DataFrame, config: EngineConfig) -> None:
    names = list(config.features.names)
    assert list(got.columns) == list(expected.columns)
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    a, b = expected[names].to_numpy(), got[names].to_numpy()
    differ = (a.view("u8") != b.view("u8")).any(axis=1)  # bits: NaN == NaN, -0.0 != 0.0
    assert not differ.any(), (
        f"{int(differ.sum())} rows differ, first: {expected.loc[differ, 'transaction_id'].iloc[0]}"
    )
    others = [c for c in expected.columns if c not in names]
    pd.testing.assert_frame_equal(got[others], expected[others])


@pytest.mark.parametrize("seed", range(1, 9))
def test_partitions_give_the_one_process_table(seed: int) -> None:
    log = random_log(seed, int_ids=seed % 4 == 0)
    config = EngineConfig(features=random_feature_set(seed)) if seed % 2 else EngineConfig()
    expected = replay(log, config).table
    assert_same_table(expected, partitioned_replay(log, config, partitions=1 + seed % 5), config)


OPTIONAL_DROPPED = ["is_fraud", "label_time", "device_id", "lat", "lon", "channel"]


def test_a_log_without_the_optional_columns_partitions_the_same_way() -> None:
    log = random_log(5, n=1_500).drop(columns=OPTIONAL_DROPPED)
    assert_same_table(replay(log).table, partitioned_replay(log, partitions=3), EngineConfig())


def test_the_python_reference_engine_partitions_the_same_way() -> None:
    log = random_log(9, n=1_500)
    config = EngineConfig(compiled=False)
    assert_same_table(replay(log, config).table, partitioned_replay(log, config, 3), config)


def test_the_logs_hold_what_a_partition_cannot_see_alone() -> None:
    """Ids shared across cards and merchants, repeated fraud labels, labels at an event's
    time, expired state: and without what the log's id tables hold, the tables differ."""
    log = random_log(4)
    ids = log.groupby("transaction_id")
    assert (ids["card_id"].nunique() > 1).sum() > 20
    assert (ids["merchant_id"].nunique() > 1).sum() > 50
    fraud_labels = log[log["label_time"].notna() & (log["is_fraud"] == 1)]
    assert (fraud_labels["transaction_id"].value_counts() > 1).sum() > 5
    assert log["label_time"].isin(log["event_time"]).sum() > 20
    assert replay(log).engine.counters["duplicates"] > 100

    real = plan._shared
    try:
        plan._shared = lambda part: SharedIds({}, {})  # type: ignore[assignment]
        blind = partitioned_replay(log, partitions=3)
    finally:
        plan._shared = real
    names = list(EngineConfig().features.names)
    expected = replay(log).table[names].to_numpy()
    assert (expected.view("u8") != blind[names].to_numpy().view("u8")).any(axis=1).sum() > 50


def test_each_side_computes_its_entitys_features() -> None:
    features = EngineConfig().features
    card, merchant = side_features(features, "card"), side_features(features, "merchant")
    assert sorted(card + merchant) == sorted(features.names)
    assert "txn_count_1h" in card and "device_seen_before_30d" in card and "amount" in card
    assert all(name.startswith("merchant_") for name in merchant)


def test_a_labels_clock_is_the_latest_event_strictly_before_it() -> None:
    at = plan.clock_before(np.array([5.0, 1.0, 3.0, 3.0]))
    clocks = at(np.array([0.5, 1.0, 3.0, 3.5, 9.0]))
    assert clocks.tolist() == [-np.inf, -np.inf, 1.0, 3.0, 5.0]


def test_bad_rows_are_refused_as_the_one_process_replay_refuses_them() -> None:
    log = random_log(2, n=200)
    log.loc[3, "card_id"] = None
    with pytest.raises(ValueError, match="card_id: 1 null values"):
        partitioned_replay(log)


# -- on Spark --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """A real local[2] Spark session (Java and PySpark from `make setup`), UI off."""
    from sentinel_dagster.features.spark_replay import spark_session

    session = spark_session("local[2]", {"spark.ui.enabled": "false"})
    yield session
    session.stop()


def spark_table(spark: object, log: pd.DataFrame, tmp_path: Path, config: EngineConfig, **kw):
    """The table Spark writes, and the run: through the active session (the fixture's)."""
    from sentinel_dagster.features.spark_replay import spark_replay

    write_parquet_frame(log, tmp_path / "log.parquet")
    result = spark_replay(tmp_path / "log.parquet", tmp_path / "features", config, **kw)
    return pd.read_parquet(tmp_path / "features"), result


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [4, 8])
def test_spark_gives_the_one_process_table(spark: object, tmp_path: Path, seed: int) -> None:
    log = random_log(seed, int_ids=seed == 8)
    config = EngineConfig(features=random_feature_set(seed)) if seed == 8 else EngineConfig()
    table, result = spark_table(spark, log, tmp_path, config, partitions=3)
    assert_same_table(replay(log, config).table, table, config)
    assert result.rows == len(log) and result.partitions == 3
    metadata = result.metadata()
    assert metadata["engine"] == "spark" and metadata["spark_master"] == "local[2]"
    assert metadata["card_partitions"] == metadata["merchant_partitions"] == 3
    assert metadata["merchant_largest_partition_rows"] >= (log["merchant_id"] == "busy").sum()
    assert metadata["worker_peak_rss_mib"] > 0 and metadata["driver_peak_rss_mib"] > 0
    assert spark.sparkContext._jsc is not None  # the active session is left running


@pytest.mark.timeout(300)
def test_spark_replays_a_log_without_the_optional_columns(spark: object, tmp_path: Path) -> None:
    log = random_log(5, n=1_500).drop(columns=OPTIONAL_DROPPED)
    table, _ = spark_table(spark, log, tmp_path, EngineConfig(), partitions=2)
    assert_same_table(replay(log).table, table, EngineConfig())


@pytest.mark.timeout(300)
def test_spark_refuses_bad_logs_with_the_replays_messages(spark: object, tmp_path: Path) -> None:
    log = random_log(3, n=100)
    config = EngineConfig()
    nulls = log.copy()
    nulls.loc[5, "merchant_id"] = None
    with pytest.raises(ValueError, match="merchant_id: 1 null values"):
        spark_table(spark, nulls, tmp_path, config)
    early = log.copy()
    early.loc[7, "label_time"] = early.loc[7, "event_time"] - pd.Timedelta(seconds=1)
    with pytest.raises(ValueError, match=r"label_time: .* is before the event's event_time"):
        spark_table(spark, early, tmp_path, config)
    nanos = log.copy()
    nanos["event_time"] = nanos["event_time"].dt.as_unit("ns")
    with pytest.raises(ValueError, match="nanosecond timestamps"):
        spark_table(spark, nanos, tmp_path, config)
    missing = log.drop(columns=["amount"])
    with pytest.raises(ValueError, match="missing column 'amount'"):
        spark_table(spark, missing, tmp_path, config)


# -- the command line ------------------------------------------------------------------------


def test_sentinel_features_on_spark_writes_the_same_table(tmp_path: Path) -> None:
    """The real command, as a user runs it: its own JVM on local[2]."""
    log = random_log(6, n=1_500)
    write_parquet_frame(log, tmp_path / "log.parquet")
    done = subprocess.run(
        [
            sys.executable, "-m", "sentinel_dagster.cli.main", "features",
            str(tmp_path / "log.parquet"), str(tmp_path / "features"),
            "--engine", "spark", "--master", "local[2]", "--partitions", "2",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on local[2]: UI at http://127.0.0.1:" in done.stdout  # Spark's UI, on loopback
    assert "on Spark local[2], 2 partitions per side" in done.stdout
    assert "[Stage " in done.stderr  # Spark's own progress bars
    maturity = load_policy(DEFAULT_POLICY_PATH).label_maturity_days
    config = EngineConfig(features=FeatureSet(label_maturity_days=maturity))
    table = pd.read_parquet(tmp_path / "features")
    assert_same_table(replay(log, config).table, table, config)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark", "--snapshot", "s.pkl"], "--snapshot needs --engine in-process"),
        (["--engine", "flink"], "Invalid value for '--engine'"),
        (["--engine", "spark", "--partitions", "-1"], "Invalid value for '--partitions'"),
    ],
)
def test_sentinel_features_refuses_what_spark_cannot_do(
    tmp_path: Path, args: list[str], message: str
) -> None:
    log = tmp_path / "log.parquet"
    write_parquet_frame(random_log(1, n=50), log)
    result = CliRunner().invoke(app, ["features", str(log), str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(
        app, ["features", str(tmp_path / "none"), str(tmp_path / "out"), "--engine", "spark"]
    )
    assert missing.exit_code == 2 and "not found" in missing.output


def test_importing_spark_connect_does_not_end_a_python_c_process() -> None:
    """Without Spark Connect's modules, PySpark takes a `python -c` process for its doctests
    and exits it, silently, when `pyspark.sql.connect` is imported: Great Expectations
    imports it, so any `python -c` using validation would stop with status 0."""
    done = subprocess.run(
        [sys.executable, "-c", "import pyspark.sql.connect.dataframe; print('imported')"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-500:]


def test_pyspark_is_imported_only_when_the_spark_engine_starts() -> None:
    """GX and MLflow import PySpark when it is installed (1.5-3 s per process, measured):
    the pipeline refuses it to them, and the Spark engine allows it."""
    probe = """
import sys
import sentinel_dagster  # what every pipeline process imports first
import great_expectations, mlflow.types.schema  # both probe for PySpark
print("pyspark" in sys.modules)
try:
    import pyspark
except ModuleNotFoundError:
    print("refused")
from sentinel_dagster.core import pyspark_on_demand
pyspark_on_demand.allow()
import pyspark.sql
print("pyspark" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert done.stdout.split() == ["False", "refused", "True"], done.stderr[-500:]
