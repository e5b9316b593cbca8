"""Replaying a simulated day through /v1/score gives the offline feature table and scores."""

from pathlib import Path

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from serving.app import create_app
from serving.bundle import load_bundle
from serving.features import FEATURE_NAMES
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import publish_small


def _event(row: dict) -> dict:
    event = {
        "transaction_id": row["transaction_id"],
        "event_time": row["event_time"].isoformat(),
        "card_id": row["card_id"],
        "merchant_id": row["merchant_id"],
        "amount": row["amount"],
        "merchant_category": row["merchant_category"],
        "channel": row["channel"],
    }
    if not pd.isna(row["device_id"]):
        event["device_id"] = row["device_id"]
    if not np.isnan(row["lat"]):
        event |= {"lat": row["lat"], "lon": row["lon"]}
    return event


def test_http_replay_matches_the_offline_table_and_scores(tmp_path: Path) -> None:
    frame = simulate_events(SimulationParams(cards=150, days=3, seed=9)).to_pandas()
    offline = replay(frame).table
    registry = Registry(tmp_path / "registry")
    version, _ = publish_small(registry, seed=1)
    bundle = load_bundle(registry.bundle_dir(version))
    expected_scores = bundle.predictor.predict(offline[list(FEATURE_NAMES)].to_numpy())
    labels = frame[frame["label_time"].notna()].sort_values(["label_time", "transaction_id"])
    label_rows = labels.to_dict("records")
    online, scores = [], []
    j = 0
    with TestClient(create_app(ServiceSettings(home=tmp_path))) as client:
        for row in frame.to_dict("records"):
            while j < len(label_rows) and label_rows[j]["label_time"] <= row["event_time"]:
                label = label_rows[j]
                client.post("/v1/feedback", json={
                    "transaction_id": label["transaction_id"], "is_fraud": True,
                    "label_time": label["label_time"].isoformat(),
                    "card_id": label["card_id"], "merchant_id": label["merchant_id"],
                    "event_time": label["event_time"].isoformat(),
                })  # fmt: skip
                j += 1
            body = client.post("/v1/score?explain=true", json=_event(row)).json()
            assert body["scored_by"] == "model"
            online.append([np.nan if v is None else v for v in body["features"].values()])
            scores.append(body["fraud_probability"])
    np.testing.assert_allclose(
        np.array(online), offline[list(FEATURE_NAMES)].to_numpy(), rtol=1e-9, equal_nan=True
    )
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-6)
