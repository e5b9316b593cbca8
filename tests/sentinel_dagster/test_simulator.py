"""Simulator: determinism, schema, scenarios, label delays and realistic behaviour."""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentinel_dagster.simulation import fraud_scenarios as fs
from sentinel_dagster.simulation.simulator import (
    SimulationParams,
    simulate_events,
    simulate_to_parquet,
)
from serving.events import ALL_COLUMNS, SCENARIOS
from tests.conftest import SMALL

KNOWN = {SCENARIOS[code - 1] for code in fs.KNOWN}
EMERGING = SCENARIOS[fs.EMERGING - 1]
# SMALL with the emerging attack running over its second half.
EMERGING_SMALL = dataclasses.replace(SMALL, emerging_from="2026-01-15")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _km(lat1, lon1, lat2, lon2):
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 6371.0 * 2 * np.arcsin(np.sqrt(a))


def test_same_arguments_give_identical_bytes(tmp_path: Path, small_parquet: Path) -> None:
    again = tmp_path / "again.parquet"
    simulate_to_parquet(SMALL, again)
    assert _sha256(again) == _sha256(small_parquet)


def test_another_seed_gives_other_data(tmp_path: Path, small_parquet: Path) -> None:
    other = tmp_path / "other.parquet"
    simulate_to_parquet(SimulationParams(cards=SMALL.cards, days=SMALL.days, seed=12), other)
    assert _sha256(other) != _sha256(small_parquet)


def test_schema_follows_the_event_contract(small_parquet: Path) -> None:
    schema = pq.read_schema(small_parquet)
    assert schema.names == list(ALL_COLUMNS)
    utc = pa.timestamp("us", tz="UTC")
    expected = {
        "transaction_id": pa.string(),
        "event_time": utc,
        "card_id": pa.string(),
        "merchant_id": pa.string(),
        "amount": pa.float64(),
        "channel": pa.string(),
        "device_id": pa.string(),
        "lat": pa.float64(),
        "is_fraud": pa.int8(),
        "label_time": utc,
        "fraud_scenario": pa.string(),
    }
    for name, arrow_type in expected.items():
        assert schema.field(name).type == arrow_type, name


def test_rows_are_ordered_by_time_then_id_with_unique_ids(small_frame: pd.DataFrame) -> None:
    assert small_frame["transaction_id"].is_unique
    keys = list(zip(small_frame["event_time"], small_frame["transaction_id"], strict=True))
    assert keys == sorted(keys)
    for column in ("transaction_id", "event_time", "card_id", "merchant_id", "amount"):
        assert small_frame[column].notna().all(), column
    assert (small_frame["amount"] >= 0).all()
    assert set(small_frame["channel"]) == {"pos", "online", "atm"}


def test_every_known_scenario_is_present_and_tagged_only_on_frauds(
    small_frame: pd.DataFrame,
) -> None:
    counts = small_frame["fraud_scenario"].value_counts()
    assert set(counts.index) == KNOWN == set(SCENARIOS) - {EMERGING}
    assert (counts > 0).all()
    fraud = small_frame["is_fraud"] == 1
    assert small_frame.loc[fraud, "fraud_scenario"].notna().all()
    assert small_frame.loc[~fraud, "fraud_scenario"].isna().all()


def test_fraud_rate_follows_the_parameter(small_frame: pd.DataFrame) -> None:
    assert 0.005 <= small_frame["is_fraud"].mean() <= 0.015
    frame = simulate_to_dataframe(SimulationParams(cards=600, days=28, seed=5, fraud_rate=0.03))
    assert 0.022 <= frame["is_fraud"].mean() <= 0.038


def simulate_to_dataframe(params: SimulationParams) -> pd.DataFrame:
    from sentinel_dagster.simulation.simulator import simulate_events

    return simulate_events(params).to_pandas()


def test_labels_arrive_days_late_and_some_never(small_frame: pd.DataFrame) -> None:
    fraud = small_frame[small_frame["is_fraud"] == 1]
    legit = small_frame[small_frame["is_fraud"] == 0]
    assert legit["label_time"].isna().all()
    never_reported = fraud["label_time"].isna().mean()
    assert 0.02 <= never_reported <= 0.25
    delay_days = (fraud["label_time"] - fraud["event_time"]).dt.total_seconds().dropna() / 86_400
    assert (delay_days >= 0).all()
    assert delay_days.min() >= 0.99  # chargebacks take at least a day
    assert 3.0 <= delay_days.median() <= 10.0
    assert delay_days.max() <= 91.0


def test_a_fixed_label_delay_changes_only_the_label_times(small_frame: pd.DataFrame) -> None:
    from dataclasses import replace

    fixed = simulate_to_dataframe(replace(SMALL, label_delay_days=7))
    reported = fixed["label_time"].notna()
    delay = fixed.loc[reported, "label_time"] - fixed.loc[reported, "event_time"]
    assert (delay == pd.Timedelta(days=7)).all()
    # The same payments, frauds and reported incidents: only the delay differs.
    pd.testing.assert_frame_equal(
        fixed.drop(columns="label_time"), small_frame.drop(columns="label_time")
    )
    assert (reported == small_frame["label_time"].notna()).all()


@pytest.mark.parametrize("days", [-1, 400])
def test_a_label_delay_out_of_range_is_refused(days: float) -> None:
    with pytest.raises(ValueError, match="label_delay_days"):
        SimulationParams(label_delay_days=days).validate()


def test_card_testing_is_a_burst_of_small_charges_at_many_merchants(
    small_frame: pd.DataFrame,
) -> None:
    testing = small_frame[small_frame["fraud_scenario"] == "card_testing"]
    # One incident = one card attacked from one fraudster device.
    for (_, _), burst in testing.groupby(["card_id", "device_id"]):
        span = burst["event_time"].max() - burst["event_time"].min()
        assert len(burst) >= 6
        assert span <= pd.Timedelta(minutes=30)
        assert burst["amount"].max() < 5.0
        assert burst["merchant_id"].nunique() >= len(burst) // 2
        assert (burst["channel"] == "online").all()


def test_account_takeover_uses_a_new_device_far_away_for_big_amounts(
    small_frame: pd.DataFrame,
) -> None:
    legit = small_frame[small_frame["is_fraud"] == 0]
    takeover = small_frame[small_frame["fraud_scenario"] == "account_takeover"]
    profile = legit.groupby("card_id").agg(
        median_amount=("amount", "median"), lat=("lat", "median"), lon=("lon", "median")
    )
    known_devices = set(zip(legit["card_id"], legit["device_id"], strict=True))
    joined = takeover.join(profile, on="card_id", rsuffix="_home")
    assert not any(
        pair in known_devices for pair in zip(joined["card_id"], joined["device_id"], strict=True)
    )
    assert (joined["amount"] / joined["median_amount"]).median() > 3.0
    distance = _km(joined["lat"], joined["lon"], joined["lat_home"], joined["lon_home"])
    assert (distance > 300).mean() > 0.8


def test_stolen_card_spree_is_large_purchases_at_risky_shops_within_hours(
    small_frame: pd.DataFrame,
) -> None:
    spree = small_frame[small_frame["fraud_scenario"] == "stolen_card_spree"]
    assert set(spree["merchant_category"]) <= {
        "electronics",
        "jewelry",
        "gift_cards",
        "digital_goods",
    }
    assert (spree["channel"] == "pos").all()
    legit_median = small_frame.loc[small_frame["is_fraud"] == 0, "amount"].median()
    assert spree["amount"].median() > 4 * legit_median
    per_card = spree.groupby("card_id")["event_time"].agg(["min", "max", "size"])
    assert (per_card["size"] >= 3).all()
    assert ((per_card["max"] - per_card["min"]) < pd.Timedelta(hours=12)).mean() > 0.9


def test_compromised_merchant_cards_share_an_earlier_store(small_frame: pd.DataFrame) -> None:
    compromised = small_frame[small_frame["fraud_scenario"] == "compromised_merchant"]
    first_fraud = compromised.groupby("card_id")["event_time"].min().rename("first_fraud")
    legit = small_frame[small_frame["is_fraud"] == 0].join(first_fraud, on="card_id", how="inner")
    before = legit[legit["event_time"] < legit["first_fraud"]]
    cards_per_store = before.groupby("merchant_id")["card_id"].nunique()
    breached = cards_per_store.idxmax()
    # A breach point: one store that a large share of the later-defrauded cards visited.
    assert cards_per_store[breached] >= 0.25 * len(first_fraud)


def test_legitimate_behaviour_includes_odd_but_honest_patterns(small_frame: pd.DataFrame) -> None:
    legit = small_frame[small_frame["is_fraud"] == 0]
    hours = legit["event_time"].dt.hour.value_counts().sort_index()
    assert hours.loc[12:14].mean() > 5 * hours.loc[2:4].mean()  # daily rhythm
    weekday = legit["event_time"].dt.day_of_week.value_counts().sort_index()
    assert weekday[5] > 1.2 * weekday[6]  # busy Saturday, quiet Sunday
    in_store = legit[legit["channel"] == "pos"]
    centre = in_store.groupby("card_id")[["lat", "lon"]].median()
    joined = in_store.join(centre, on="card_id", rsuffix="_usual")
    far = _km(joined["lat"], joined["lon"], joined["lat_usual"], joined["lon_usual"]) > 500
    assert joined.loc[far, "card_id"].nunique() >= 5  # travellers
    devices = legit.groupby("card_id")["device_id"].nunique()
    assert (devices >= 3).sum() >= 5  # new phones
    ratio = legit["amount"] / legit.groupby("card_id")["amount"].transform("median")
    assert (ratio > 10).sum() >= 5  # occasional big purchases


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cards": 0}, "cards"),
        ({"days": 0}, "days"),
        ({"fraud_rate": 0.0}, "fraud_rate"),
        ({"fraud_rate": 0.7}, "fraud_rate"),
        ({"start": "yesterday"}, "start"),
        ({"emerging_from": "soon"}, "emerging_from must be a date"),
        # SMALL covers 2026-01-01 to 2026-01-28: an attack from the 29th would never run.
        ({"emerging_from": "2026-01-29"}, "emerging_from 2026-01-29 is after the simulated"),
    ],
)
def test_bad_parameters_are_rejected_by_name(change: dict, message: str) -> None:
    params = SimulationParams(**{**SMALL.__dict__, **change})
    with pytest.raises(ValueError, match=message):
        params.validate()


def test_defaults_give_about_a_million_events_at_about_one_percent_fraud(tmp_path: Path) -> None:
    summary = simulate_to_parquet(SimulationParams(), tmp_path / "default.parquet")
    assert 900_000 <= summary.rows <= 1_200_000
    assert 0.005 <= summary.fraud_rate <= 0.015
    assert all(summary.scenario_counts[name] > 100 for name in KNOWN)
    assert summary.scenario_counts[EMERGING] == 0  # off unless asked for


def test_no_payment_exceeds_the_card_limit_or_the_data_policy() -> None:
    from sentinel_dagster.core.policy import DataPolicy
    from sentinel_dagster.simulation.world import CARD_LIMIT

    table = simulate_events(SimulationParams(cards=3_000, days=30, seed=8))
    largest = max(table.column("amount").to_pylist())
    assert largest <= CARD_LIMIT < DataPolicy().max_amount


def test_the_default_data_is_the_data_from_before_the_emerging_scenario(
    small_frame: pd.DataFrame,
) -> None:
    """The emerging scenario is off by default and draws nothing then, so every default
    lineage keeps its data. The digest is of SMALL's content as simulated before the
    scenario existed; update it only for a deliberate change of the simulated world."""
    assert SimulationParams().emerging_from is None
    assert EMERGING not in set(small_frame["fraud_scenario"].dropna())
    content = pd.util.hash_pandas_object(small_frame, index=False).to_numpy().tobytes()
    assert hashlib.sha256(content).hexdigest() == (
        "3dc38e6649f83fc68dab193425995ac3b6877fa63e248a0a3ae52f122190abcf"
    )


@pytest.fixture(scope="module")
def emerging_frame() -> pd.DataFrame:
    return simulate_to_dataframe(EMERGING_SMALL)


def test_the_emerging_scenario_runs_only_from_its_date(
    small_frame: pd.DataFrame, emerging_frame: pd.DataFrame
) -> None:
    cash_out = emerging_frame[emerging_frame["fraud_scenario"] == EMERGING]
    assert len(cash_out) >= 10
    assert (cash_out["event_time"] >= pd.Timestamp("2026-01-15", tz="UTC")).all()
    assert (cash_out["is_fraud"] == 1).all()
    # It takes its share of the frauds from the known scenarios: the fraud rate stays put,
    # and the holders' own payments are the very same.
    assert 0.005 <= emerging_frame["is_fraud"].mean() <= 0.015
    after = emerging_frame[emerging_frame["event_time"] >= pd.Timestamp("2026-01-15", tz="UTC")]
    share = (after.loc[after["is_fraud"] == 1, "fraud_scenario"] == EMERGING).mean()
    assert 0.1 <= share <= 0.4
    payment = ["event_time", "card_id", "merchant_id", "amount", "device_id"]
    legit_with = emerging_frame.loc[emerging_frame["is_fraud"] == 0, payment]
    legit_without = small_frame.loc[small_frame["is_fraud"] == 0, payment]
    pd.testing.assert_frame_equal(
        legit_with.sort_values(payment, ignore_index=True),
        legit_without.sort_values(payment, ignore_index=True),
    )


def test_an_emerging_date_before_the_start_runs_it_all_along() -> None:
    frame = simulate_to_dataframe(
        SimulationParams(cards=600, days=7, seed=3, start="2026-04-01", emerging_from="2026-03-01")
    )
    cash_out = frame[frame["fraud_scenario"] == EMERGING]
    assert cash_out["event_time"].dt.day.nunique() >= 5  # every night, not from a date on
    assert 0.005 <= frame["is_fraud"].mean() <= 0.02


def test_emerging_frauds_are_labelled_like_the_others(emerging_frame: pd.DataFrame) -> None:
    cash_out = emerging_frame[emerging_frame["fraud_scenario"] == EMERGING]
    assert cash_out["label_time"].notna().mean() >= 0.8  # a holder short of cash reports it
    delay_days = (cash_out["label_time"] - cash_out["event_time"]).dt.total_seconds().dropna()
    assert (delay_days / 86_400).between(0.99, 91.0).all()


def test_atm_cash_out_is_large_night_withdrawals_at_atms_in_the_holders_city(
    emerging_frame: pd.DataFrame,
) -> None:
    cash_out = emerging_frame[emerging_frame["fraud_scenario"] == EMERGING]
    legit = emerging_frame[emerging_frame["is_fraud"] == 0]
    assert (cash_out["channel"] == "atm").all()
    assert (cash_out["merchant_category"] == "atm").all()
    assert cash_out["device_id"].isna().all()  # a cloned card: no phone involved
    # The largest withdrawals, half of them above anything an honest holder takes out.
    assert cash_out["amount"].min() >= 200
    assert (cash_out["amount"] > legit.loc[legit["channel"] == "atm", "amount"].max()).mean() > 0.3
    assert cash_out["event_time"].dt.hour.isin([22, 23, 0, 1, 2, 3, 4, 5]).mean() > 0.95
    per_card = cash_out.groupby("card_id")["event_time"].agg(["min", "max", "size"])
    assert (per_card["size"] >= 2).all()
    assert ((per_card["max"] - per_card["min"]) < pd.Timedelta(hours=3)).mean() > 0.9
    # At home, not far away: the card's usual in-store places are in the same city.
    home = legit[legit["channel"] == "pos"].groupby("card_id")[["lat", "lon"]].median()
    joined = cash_out.join(home, on="card_id", rsuffix="_home").dropna(subset="lat_home")
    distance = _km(joined["lat"], joined["lon"], joined["lat_home"], joined["lon_home"])
    assert (distance < 100).mean() > 0.8
