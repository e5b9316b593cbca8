"""Offline features: replay parity with one-at-a-time online processing, checks, CLI, asset."""

import gc
import math
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.cli.runner import local_instance
from sentinel_dagster.definitions import defs
from sentinel_dagster.defs.resources import FeatureReplayEngine, GovernancePolicy
from sentinel_dagster.features.feature_checks import leakage_probe, sanity_outcomes
from sentinel_dagster.features.feature_replay import epoch_seconds, in_replay_order, replay
from serving.feature_engine import EngineConfig, FeatureEngine
from serving.features import FEATURE_NAMES, FeatureSet


@pytest.fixture(scope="module")
def replayed(small_frame: pd.DataFrame) -> pd.DataFrame:
    return replay(small_frame).table


def _online_vectors(frame: pd.DataFrame) -> np.ndarray:
    """Feed events one at a time as the service receives them: JSON-like dicts, ISO times."""
    engine = FeatureEngine()
    labelled = frame[frame["label_time"].notna()]
    labels = sorted(
        zip(epoch_seconds(labelled["label_time"]).tolist(), labelled["transaction_id"], strict=True)
    )
    rows = frame.set_index("transaction_id", drop=False)
    j = 0
    vectors = []
    for record in frame.to_dict("records"):
        t = record["event_time"].timestamp()
        while j < len(labels) and labels[j][0] <= t:
            label_time, txn = labels[j]
            row = rows.loc[txn]
            engine.apply_label(
                txn, True, label_time, row["card_id"], row["merchant_id"],
                row["event_time"].timestamp(),
            )  # fmt: skip
            j += 1
        event = {
            "transaction_id": record["transaction_id"],
            "event_time": record["event_time"].isoformat(),
            "card_id": record["card_id"],
            "merchant_id": record["merchant_id"],
            "amount": record["amount"],
            "merchant_category": record["merchant_category"],
            "channel": record["channel"],
            "device_id": None if pd.isna(record["device_id"]) else record["device_id"],
            "lat": None if math.isnan(record["lat"]) else record["lat"],
            "lon": None if math.isnan(record["lon"]) else record["lon"],
        }
        vectors.append(engine.process_event(event))
    return np.array(vectors, dtype="float64")


def test_offline_replay_equals_online_one_event_at_a_time(
    small_frame: pd.DataFrame, replayed: pd.DataFrame
) -> None:
    online = _online_vectors(small_frame)
    offline = replayed[list(FEATURE_NAMES)].to_numpy()
    assert online.shape == offline.shape == (len(small_frame), len(FEATURE_NAMES))
    np.testing.assert_allclose(online, offline, rtol=1e-9, atol=0, equal_nan=True)
    # The label features really are exercised by this dataset.
    assert replayed["card_has_reported_fraud"].sum() > 0
    assert replayed["merchant_fraud_count_7d"].sum() > 0


def test_replay_keeps_keys_and_labels_in_time_order(
    small_frame: pd.DataFrame, replayed: pd.DataFrame
) -> None:
    assert list(replayed.columns[:4]) == ["transaction_id", "event_time", "card_id", "merchant_id"]
    assert list(replayed.columns[4 : 4 + len(FEATURE_NAMES)]) == list(FEATURE_NAMES)
    assert {"is_fraud", "label_time", "fraud_scenario"} <= set(replayed.columns)
    assert replayed["transaction_id"].tolist() == small_frame["transaction_id"].tolist()
    assert replayed["is_fraud"].tolist() == small_frame["is_fraud"].tolist()


def test_replay_does_not_depend_on_input_row_order(
    small_frame: pd.DataFrame, replayed: pd.DataFrame
) -> None:
    shuffled = small_frame.sample(frac=1.0, random_state=4)
    again = replay(shuffled).table
    pd.testing.assert_frame_equal(again, replayed)


def test_ties_in_time_are_ordered_by_id_and_any_index_lines_up(
    small_frame: pd.DataFrame, replayed: pd.DataFrame
) -> None:
    # Every event at one of a few instants: the order is then the ids' alone.
    tied = small_frame.head(300).copy()
    tied["event_time"] = tied["event_time"].min().floor("D")
    backwards = tied.iloc[::-1].set_axis(range(1000, 1300))  # ids descending, odd index
    table = replay(backwards).table
    assert table["transaction_id"].tolist() == sorted(tied["transaction_id"])
    pd.testing.assert_frame_equal(table, replay(tied.sort_values("transaction_id")).table)
    # Already in order under another index: the rows keep their own keys and labels.
    shifted = small_frame.set_axis(range(5, 5 + len(small_frame)))
    pd.testing.assert_frame_equal(replay(shifted).table, replayed)
    assert in_replay_order(np.array([1.0, 2.0, 2.0]), pd.Series(["a", "b", "c"]))
    assert not in_replay_order(np.array([1.0, 2.0, 2.0]), pd.Series(["a", "c", "b"]))
    assert not in_replay_order(np.array([2.0, 1.0]), pd.Series(["a", "b"]))
    assert not in_replay_order(np.array([1.0, 1.0]), pd.Series([10, 9]))  # numbers, not text
    assert in_replay_order(np.array([1.0, 1.0]), pd.Series([9, 10]))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_the_replayed_state_is_not_left_for_young_collections_to_walk(
    small_frame: pd.DataFrame, compiled: bool
) -> None:
    # The state is made with the collector off; left in the youngest generation, the next
    # collections would walk all of it. It is handed over as old, and nothing stays frozen.
    gc.unfreeze()  # what earlier tests' services froze (the service freezes its state)
    engine = replay(small_frame, EngineConfig(compiled=compiled)).engine
    card = next(iter(engine.store.table("card").values()))
    merchant = next(iter(engine.store.table("merchant").values()))
    young = {id(o) for generation in (0, 1) for o in gc.get_objects(generation)}
    assert id(card) not in young and id(merchant) not in young
    old = {id(o) for o in gc.get_objects(2)}
    assert id(card) in old and id(merchant) in old
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    # In a process that froze objects of its own, they stay frozen: in no generation the
    # collector walks. (Not the freeze count: a frozen object freed meanwhile lowers it.)
    kept = [[] for _ in range(10)]  # lists: objects the collector tracks
    gc.freeze()
    replay(small_frame.head(50), EngineConfig(compiled=compiled))
    walked = {id(o) for generation in (0, 1, 2) for o in gc.get_objects(generation)}
    assert gc.get_freeze_count() > 0 and not any(id(k) in walked for k in kept)
    gc.unfreeze()
    walked = {id(o) for o in gc.get_objects(2)}
    assert all(id(k) in walked for k in kept)  # the check can fail: unfrozen, they are seen
    del kept


def test_fraud_shows_in_the_features(small_frame: pd.DataFrame, replayed: pd.DataFrame) -> None:
    by = replayed.groupby(replayed["fraud_scenario"].fillna("legit"))
    assert by["txn_count_10m"].median()["card_testing"] >= 3
    assert by["txn_count_10m"].median()["legit"] == 0
    takeover = small_frame[small_frame["fraud_scenario"] == "account_takeover"]
    first_use = takeover.groupby(["card_id", "device_id"]).head(1).index  # same row order
    assert (replayed.loc[first_use, "device_seen_before_30d"] == 0).all()  # a new phone
    assert by["device_seen_before_30d"].mean()["legit"] > 0.8
    ratio = by["amount_to_avg_30d"].median()
    assert ratio["stolen_card_spree"] > 3 * ratio["legit"]


def test_sanity_checks_pass_on_real_features_and_catch_bad_ones(replayed: pd.DataFrame) -> None:
    assert all(o.passed for o in sanity_outcomes(replayed))
    broken = replayed.copy()
    broken.loc[0, "speed_kmh_from_last_txn"] = np.inf
    broken.loc[1, "txn_count_1h"] = -1
    broken.loc[2, "merchant_fraud_rate_30d"] = 1.5
    failed = {o.name: o.detail for o in sanity_outcomes(broken) if not o.passed}
    assert failed == {
        "no_infinities": "infinite values in: ['speed_kmh_from_last_txn']",
        "counts_non_negative": "negative in: ['txn_count_1h']",
        "rates_in_unit_interval": "outside [0, 1]: ['merchant_fraud_rate_30d']",
    }


def test_leakage_probe_passes_on_the_engine_and_catches_a_future_label(
    small_frame: pd.DataFrame, replayed: pd.DataFrame
) -> None:
    probe = leakage_probe(small_frame, replayed)
    assert probe.passed, probe.examples
    assert "0 disagreed" in probe.detail
    # Simulate a leaking pipeline: label features computed with labels from the future.
    leaky = replayed.copy()
    fraud_cards = small_frame.loc[small_frame["is_fraud"] == 1, "card_id"].unique()
    first_rows = leaky[leaky["card_id"].isin(fraud_cards)].groupby("card_id").head(1).index
    leaky.loc[first_rows, "card_has_reported_fraud"] = 1.0
    caught = leakage_probe(small_frame, leaky, sample=len(leaky))
    assert not caught.passed
    assert any("card flag set before any report" in e for e in caught.examples)


def test_leakage_probe_checks_the_lagged_windows_against_their_maturity(
    small_frame: pd.DataFrame, replayed: pd.DataFrame
) -> None:
    # A lagged window that ended at the event instead of a week before would count frauds
    # whose labels were not due: the probe recomputes every declared merchant fraud count.
    assert replayed["merchant_fraud_count_7d_lagged"].sum() > 0
    shifted = replayed.copy()
    shifted["merchant_fraud_count_7d_lagged"] = replayed["merchant_fraud_count_7d"]
    caught = leakage_probe(small_frame, shifted, sample=len(shifted))
    assert not caught.passed
    assert any("merchant_fraud_count_7d_lagged" in e for e in caught.examples)
    # The same table replayed with a 2-day maturity passes only against a 2-day declaration.
    two_days = FeatureSet(label_maturity_days=2)
    other = replay(small_frame, EngineConfig(features=two_days)).table
    assert leakage_probe(small_frame, other, two_days).passed
    assert not leakage_probe(small_frame, other).passed


def test_replay_rejects_bad_rows_naming_the_column(small_frame: pd.DataFrame) -> None:
    bad = small_frame.head(100).copy()
    bad.loc[5, "amount"] = -1.0
    with pytest.raises(ValueError, match=r"^amount:"):
        replay(bad)
    bad = small_frame.head(100).copy()
    bad.loc[5, "card_id"] = None
    with pytest.raises(ValueError, match=r"^card_id:"):
        replay(bad)


def test_cli_features_writes_the_table_and_a_snapshot(small_parquet: Path, tmp_path: Path) -> None:
    out, state = tmp_path / "features.parquet", tmp_path / "state.pkl"
    result = CliRunner().invoke(
        app, ["features", str(small_parquet), str(out), "--snapshot", str(state)]
    )
    assert result.exit_code == 0, result.output
    assert "rows x" in result.output
    table = pd.read_parquet(out)
    assert list(table.columns[4 : 4 + len(FEATURE_NAMES)]) == list(FEATURE_NAMES)
    assert FeatureEngine.restore(state).stats()["events"] == len(table)


def test_cli_features_lags_label_windows_by_the_policy_maturity(
    small_parquet: Path, tmp_path: Path
) -> None:
    policy, state = tmp_path / "policy.yaml", tmp_path / "state.pkl"
    policy.write_text("label_maturity_days: 2\n")
    out = tmp_path / "features.parquet"
    args = ["features", str(small_parquet), str(out), "--snapshot", str(state)]
    result = CliRunner().invoke(app, [*args, "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert FeatureEngine.restore(state).config.features.label_maturity_days == 2.0
    policy.write_text("label_maturity_days: -1\n")
    bad = CliRunner().invoke(app, [*args, "--policy", str(policy)])
    assert bad.exit_code == 2 and "label_maturity_days" in bad.output


def test_cli_features_rejects_unreadable_and_invalid_input(
    small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["features", str(tmp_path / "no.parquet"), str(tmp_path / "o")])
    assert missing.exit_code == 2
    assert "file not found" in missing.output
    path = tmp_path / "bad.parquet"
    bad = small_frame.head(10).copy()
    bad.loc[3, "amount"] = -2.0
    bad.to_parquet(path)
    invalid = runner.invoke(app, ["features", str(path), str(tmp_path / "o.parquet")])
    assert invalid.exit_code == 1
    assert "amount: values must be finite and >= 0" in invalid.output
    assert "Traceback" not in invalid.output


def materialize_features(
    home: Path, simulation: dict, resources: dict | None = None
) -> dg.ExecuteInProcessResult:
    """`transactions` and `transaction_features` on a small simulation."""
    config = {"ops": {"transactions": {"config": simulation}}}
    with local_instance(home) as instance:
        return dg.materialize(
            [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
            selection=[dg.AssetKey("transactions"), dg.AssetKey("transaction_features")],
            run_config=config,
            instance=instance,
            resources={**defs.resources, **(resources or {})},
        )


def test_features_asset_materializes_after_the_data_checks(sentinel_home: Path) -> None:
    result = materialize_features(sentinel_home, {"cards": 300, "days": 14, "seed": 2})
    assert result.success
    check = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "transaction_features_valid"
    )
    assert check.passed
    assert "no_label_leakage" in str(check.metadata["outcomes"].value)
    materialization = next(
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "transaction_features"
    )
    assert "null_rate" in str(materialization.metadata["profile"].value)
    table = pd.read_parquet(sentinel_home / "assets" / "transaction_features.parquet")
    transactions = pd.read_parquet(sentinel_home / "assets" / "transactions.parquet")
    assert len(table) == len(transactions)


@pytest.mark.timeout(600)
def test_the_feature_engine_resource_replays_on_spark(sentinel_home: Path) -> None:
    """The same asset on Spark (local[2]) when the resource says so: the same table, and
    the run's metadata names the engine and its partitions."""
    spark = FeatureReplayEngine(engine="spark", master="local[2]", partitions=2)
    result = materialize_features(
        sentinel_home, {"cards": 200, "days": 10, "seed": 3}, {"feature_engine": spark}
    )
    assert result.success
    metadata = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "transaction_features"
    )
    assert metadata["engine"].value == "spark" and metadata["partitions"].value == 2
    assert metadata["spark_master"].value == "local[2]"
    assert metadata["card_partitions"].value == metadata["merchant_partitions"].value == 2
    table = pd.read_parquet(sentinel_home / "assets" / "transaction_features.parquet")
    transactions = pd.read_parquet(sentinel_home / "assets" / "transactions.parquet")
    features = GovernancePolicy().feature_set()
    expected = replay(transactions, EngineConfig(features=features)).table
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert not (sentinel_home / "spark").exists() or not any((sentinel_home / "spark").iterdir())
