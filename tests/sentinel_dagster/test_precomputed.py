"""Bring-your-own precomputed features: the earlier system's training format to a served model."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.monitoring.reference import read_reference
from sentinel_dagster.training import mlflow_tracking
from serving.app import create_app
from serving.bundle import load_bundle
from serving.features import SEED_FEATURES
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import publish_with_profiles
from tests.serving.test_heuristic import BENIGN, RISKY


def seed_format_table(rows: int = 12_000, seed: int = 3, fraud_rate: float = 0.03) -> pd.DataFrame:
    """The earlier system's training format: its seven feature columns and is_fraud, no time
    and no ids. Frauds lean to night, bursts at many merchants, amounts far above the card's
    7-day average and online, with overlap so that the task is not trivial."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(rows) < fraud_rate
    n = fraud.sum()
    avg = rng.lognormal(4.3, 0.6, rows)
    count = rng.poisson(3, rows)
    count[fraud] = rng.poisson(9, n)
    frame = pd.DataFrame(
        {
            "amount": np.round(avg * rng.lognormal(0.0, 0.4, rows), 2),
            "hour_of_day": rng.choice(24, rows, p=_day_hours()),
            "days_since_last_txn": rng.exponential(1.5, rows),
            "txn_count_24h": count,
            "distinct_merchants_24h": np.minimum(count, rng.poisson(2, rows)),
            "avg_amount_7d": np.round(avg, 2),
            "channel_online": (rng.random(rows) < 0.3).astype(int),
            "is_fraud": fraud.astype(int),
        }
    )
    f = frame.loc[fraud]
    frame.loc[fraud, "amount"] = np.round(f["avg_amount_7d"] * rng.uniform(1.0, 9.0, n), 2)
    frame.loc[fraud, "hour_of_day"] = rng.choice(24, n)  # any hour: nights stand out
    frame.loc[fraud, "days_since_last_txn"] = rng.exponential(0.3, n)
    frame.loc[fraud, "distinct_merchants_24h"] = np.minimum(f["txn_count_24h"], rng.poisson(6, n))
    frame.loc[fraud, "channel_online"] = (rng.random(n) < 0.75).astype(int)
    return frame


def _day_hours() -> np.ndarray:
    weights = np.array([0.3] * 6 + [1.0] * 16 + [0.5] * 2)
    return weights / weights.sum()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _train(path: Path, *extra: str):
    return CliRunner().invoke(app, ["train", "--data", str(path), *extra])


def test_a_seed_format_table_trains_passes_the_gate_and_serves(home: Path, tmp_path: Path) -> None:
    table = tmp_path / "seed.parquet"
    seed_format_table().to_parquet(table)
    result = _train(table)
    assert result.exit_code == 0, result.output
    assert "training the precomputed-7 model" in result.output
    assert "stratified random split: weaker evidence than out-of-time" in result.output
    assert "ok  uplift:pr_auc" in result.output
    assert "as champion" in result.output
    assert "note: no full model and no online features: both need the event log" in result.output

    registry = Registry(home / "registry")
    bundle = load_bundle(registry.bundle_dir(registry.pointer("champion") or ""))
    manifest = bundle.manifest
    assert manifest["full_model"] is False and bundle.full is None
    assert "model.onnx" not in manifest["files"]  # the full model is absent, and says so
    # The drift watch compares the profile model's inputs and scores: its reference is theirs.
    reference = read_reference(bundle.path)
    assert "drift_reference.json" in manifest["files"]
    assert reference is not None and reference.model == "precomputed-7"
    assert list(reference.features) == list(manifest["profiles"]["precomputed-7"]["features"])
    assert sorted(manifest["profiles"]["precomputed-7"]["features"]) == sorted(SEED_FEATURES)
    card = (bundle.path / "model_card.md").read_text()
    assert "{{" not in card and "Stratified random split" in card and "no full model" in card
    lineage = json.loads((bundle.path / "lineage.json").read_text())
    assert lineage["split"] == "stratified_random"
    judged = lineage["evaluation"]["profiles"]["precomputed-7"]
    assert "weaker evidence than an out-of-time holdout" in judged["evidence"]

    _assert_mlflow_records(home, manifest, bundle.path)

    with TestClient(create_app(ServiceSettings(home=home))) as client:
        risky = client.post("/v1/score", json=RISKY).json()
        benign = client.post("/v1/score", json=BENIGN).json()
        raw = client.post(
            "/v1/score", json={"amount": 30.0, "card_id": "c", "merchant_id": "m",
                               "transaction_id": "t"},
        ).json()  # fmt: skip
    assert (risky["profile"], risky["scored_by"], risky["decision"]) == (
        "precomputed-7", "model", "decline",
    )  # fmt: skip
    assert risky["fraud_probability"] >= risky["threshold"]
    assert (benign["profile"], benign["decision"]) == ("precomputed-7", "approve")
    # A raw event: the profile model reads the online state's values; the answer says the
    # full model it wanted is absent.
    assert (raw["profile"], raw["profile_unavailable"]) == ("precomputed-7", "full")


def _assert_mlflow_records(home: Path, manifest: dict, bundle: Path) -> None:
    """The run of `sentinel train`, as an MLflow user finds it: named, tagged, with its
    datasets, the registered profile model's signature and the ONNX model it serves."""
    mlflow_tracking.use_local_store(home)
    client = MlflowClient()
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.info.run_name == "train-precomputed-7-seed"  # the profile and the file
    tags = run.data.tags
    assert tags[mlflow_tracking.DATA_FINGERPRINT_TAG] == manifest["data_fingerprint"]
    assert tags[mlflow_tracking.BUNDLE_VERSION_TAG] == manifest["version"]
    assert mlflow_tracking.DAGSTER_RUN_TAG not in tags  # no Dagster run behind it
    contexts = {
        d.dataset.name: {t.value for t in d.tags if t.key == "mlflow.data.context"}
        for d in run.inputs.dataset_inputs
    }
    assert contexts == {
        "seed.train": {"training"}, "seed.validation": {"validation"},
        "seed.holdout": {"evaluation"},
    }  # fmt: skip
    seven = manifest["profiles"]["precomputed-7"]["features"]
    uri = f"models:/{mlflow_tracking.REGISTERED_MODEL}/{manifest['mlflow_model_version']}"
    signature = mlflow.models.get_model_info(uri).signature
    assert signature.inputs.input_names() == seven  # the profile's columns, in its order
    assert tags[mlflow_tracking.SERVED_FILE_TAG] == "profile-precomputed-7.onnx"
    served = Path(mlflow.artifacts.download_artifacts(tags[mlflow_tracking.SERVED_MODEL_TAG]))
    assert (served / "model.onnx").read_bytes() == (
        bundle / "profile-precomputed-7.onnx"
    ).read_bytes()


def test_bad_values_are_refused_by_the_expectations_and_nothing_is_trained(
    home: Path, tmp_path: Path
) -> None:
    frame = seed_format_table(rows=2_000)
    frame.loc[5, "hour_of_day"] = 25
    frame.loc[7, "txn_count_24h"] = -1
    frame.loc[9, "is_fraud"] = 2
    table = tmp_path / "bad.parquet"
    frame.to_parquet(table)
    result = _train(table)
    assert result.exit_code == 1
    for column in ("hour_of_day", "txn_count_24h", "is_fraud"):
        assert f"({column})" in result.output, column
    assert "Traceback" not in result.output
    assert Registry(home / "registry").pointer("champion") is None
    assert not (home / "mlflow").exists()  # nothing was trained


def test_a_table_without_a_profiles_columns_or_file_gets_a_one_line_error(
    home: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "partial.parquet"
    seed_format_table(rows=500)[["amount", "hour_of_day", "is_fraud"]].to_parquet(partial)
    result = _train(partial)
    assert result.exit_code == 1
    assert "no request profile's columns are all present" in result.output
    assert "precomputed-7: amount, hour_of_day" in result.output
    missing = _train(tmp_path / "nope.parquet")
    assert missing.exit_code == 2 and "file not found" in missing.output


def test_labels_that_carry_no_signal_fail_the_gate_and_publish_nothing(
    home: Path, tmp_path: Path
) -> None:
    frame = seed_format_table(rows=6_000)
    frame["is_fraud"] = np.random.default_rng(0).permutation(frame["is_fraud"].to_numpy())
    table = tmp_path / "noise.parquet"
    frame.to_parquet(table)
    result = _train(table)
    assert result.exit_code == 1, result.output
    assert "promotion gate refused" in result.output
    assert "FAIL uplift:pr_auc" in result.output
    assert Registry(home / "registry").pointer("champion") is None


def test_too_few_frauds_to_split_is_a_one_line_error(home: Path, tmp_path: Path) -> None:
    frame = seed_format_table(rows=1_000, fraud_rate=0.0)
    frame.loc[[3, 500], "is_fraud"] = 1  # 0.2%: inside the policy's bounds, too few to split
    table = tmp_path / "thin.parquet"
    frame.to_parquet(table)
    result = _train(table)
    assert result.exit_code == 1
    last = result.output.splitlines()[-1]
    assert last.startswith("error: ") and "2 frauds" in last
    assert "Traceback" not in result.output


def test_a_champion_with_a_full_model_is_not_replaced_by_a_profile_model_alone(
    home: Path, tmp_path: Path
) -> None:
    registry = Registry(home / "registry")
    champion, _ = publish_with_profiles(registry)  # full + precomputed-7
    table = tmp_path / "seed.parquet"
    seed_format_table().to_parquet(table)
    refused = _train(table)
    assert refused.exit_code == 1
    assert "FAIL coverage: the champion answers full requests with its own model" in refused.output
    assert registry.pointer("challenger") is None
    allowing = tmp_path / "policy.yaml"
    allowing.write_text("promotion:\n  allow_missing_models: [full]\n")
    published = _train(table, "--policy", str(allowing))
    assert published.exit_code == 0, published.output
    assert f"as challenger, shadowed beside champion {champion}" in published.output
    assert registry.pointer("champion") == champion


def test_check_promotion_judges_a_bundle_without_a_full_model(home: Path, tmp_path: Path) -> None:
    table = tmp_path / "seed.parquet"
    seed_format_table().to_parquet(table)
    assert _train(table).exit_code == 0
    registry = Registry(home / "registry")
    bundle = registry.bundle_dir(registry.pointer("champion") or "")
    judged = CliRunner().invoke(
        app, ["check-promotion", "--metadata", str(bundle / "manifest.json")]
    )
    assert judged.exit_code == 0, judged.output
    assert "precomputed-7" not in judged.output or "FAIL" not in judged.output
    copy = tmp_path / "manifest.json"  # without its lineage.json: no heuristic to compare
    copy.write_text((bundle / "manifest.json").read_text())
    alone = CliRunner().invoke(app, ["check-promotion", "--metadata", str(copy)])
    assert alone.exit_code == 1 and "heuristic pr_auc missing" in alone.output
    assert "Traceback" not in alone.output
