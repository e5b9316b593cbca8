"""The drift watch: PSI bins, the bundle's drift reference, the champion_drift asset and its
check on hand-written scored-event logs, and the retrain sensor."""

import datetime as dt
import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from sentinel_dagster.core.policy import DriftPolicy, PolicyError, load_policy
from sentinel_dagster.core.stability import QuantileBins
from sentinel_dagster.defs.monitoring import DRIFT_CHECK, champion_drift
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.defs.sensors import drift_retrain_request, drift_retrain_sensor
from sentinel_dagster.governance.publishing import BundleContent, publish
from sentinel_dagster.monitoring.drift import judge_drift, live_traffic
from sentinel_dagster.monitoring.reference import (
    DRIFT_REFERENCE_FILE,
    DriftReference,
    DriftReferenceError,
    build_reference,
    read_reference,
)
from sentinel_dagster.training.compile_model import to_onnx
from serving.bundle import sha256_file
from serving.features import FEATURE_INDEX, FEATURE_NAMES
from serving.registry import Registry
from tests.serving.bundles import make_writable, proof, small_booster

THRESHOLD = 0.1  # scores are Beta(1, 30): about 4% of them are at or above it
DAY_S = 86_400.0


def feature_rows(n: int, seed: int, amount_factor: float = 1.0, count_shift: int = 0):
    """Rows of every feature: lognormal amounts, Poisson counts, a constant, 10% missing."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(rng.normal(size=(n, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    rows["amount"] = rng.lognormal(3, 1, n) * amount_factor
    rows["txn_count_24h"] = rng.poisson(2, n) + count_shift
    rows["card_has_reported_fraud"] = 0.0
    rows.loc[rng.random(n) < 0.1, "days_since_last_txn"] = np.nan
    return rows


def scores_of(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed + 1).beta(1, 30, n) + shift, 0, 1)


def reference(rows: int = 4_000) -> DriftReference:
    return build_reference(
        "full", feature_rows(rows, 0), FEATURE_NAMES, scores_of(rows, 0), THRESHOLD, "holdout"
    )


@pytest.fixture(scope="module")
def model_bytes() -> tuple[bytes, bytes, dict]:
    booster = small_booster(rounds=5)
    return bytes(booster.save_raw("json")), to_onnx(booster), proof(booster)


def publish_champion(
    home: Path, model: tuple, with_reference: bool = True, run: str = "drift001"
) -> str:
    """Publish a small bundle (with a drift reference or without) and make it champion."""
    model_json, model_onnx, rows = model
    content = BundleContent(
        model_json=model_json,
        model_onnx=model_onnx,
        threshold=THRESHOLD,
        metrics={"pr_auc": 0.8},
        data_fingerprint="test",
        code_version="test",
        mlflow_run_id=run,
        mlflow_model_version=None,
        lineage={"test": True},
        card_fields={},
        proof={"full": rows},
        drift_reference=reference().to_dict() if with_reference else None,
    )
    registry = Registry(home / "registry")
    version, _ = publish(registry, content)
    registry.set_pointer("champion", version)
    return version


def log_lines(champion: str, rows: pd.DataFrame, scores: np.ndarray, now: float, **extra):
    """Scored-log records as the service writes them, each with its feature vector."""
    for i, (vector, score) in enumerate(zip(rows.to_numpy(float), scores, strict=True)):
        yield {
            "transaction_id": f"t{i}", "event_time": now - 3_600 - i, "scored_at": now - 60 - i,
            "champion_version": champion, "profile": "full", "champion_score": float(score),
            "champion_threshold": THRESHOLD, "decided_by": "champion", "scored_by": "model",
            "decision": "decline" if score >= THRESHOLD else "approve", "state": "added",
            "features": [None if np.isnan(v) else float(v) for v in vector], **extra,
        }  # fmt: skip


def write_log(home: Path, records) -> None:
    folder = home / "scored"
    folder.mkdir(parents=True, exist_ok=True)
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    with (folder / f"scored-{day}-testhost-1.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def materialize(home: Path, instance: dg.DagsterInstance, policy: Path | None = None):
    result = dg.materialize(
        [champion_drift],
        instance=instance,
        resources={
            "sentinel_home": SentinelHome(path=str(home)),
            "policy": GovernancePolicy(path=str(policy)) if policy else GovernancePolicy(),
        },
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == DRIFT_CHECK and check.severity == dg.AssetCheckSeverity.WARN
    (materialization,) = result.asset_materializations_for_node("champion_drift")
    return check, materialization.metadata


def policy_file(tmp_path: Path, **drift: object) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"drift": drift}))
    return path


# PSI and its bins


def test_psi_is_near_zero_on_the_same_distribution_and_large_on_a_shifted_one() -> None:
    rng = np.random.default_rng(3)
    amounts = QuantileBins.of(rng.lognormal(3, 1, 20_000))
    assert amounts.psi(rng.lognormal(3, 1, 1_000)) < 0.05
    assert amounts.psi(rng.lognormal(3, 1, 1_000) * 2) > 0.25
    constant = QuantileBins.of(np.zeros(1_000))  # a move either way shows
    assert constant.psi(np.zeros(500)) == pytest.approx(0.0)
    assert constant.psi(np.full(500, -1.0)) > 1.0 and constant.psi(np.full(500, 1.0)) > 1.0
    present = QuantileBins.of(rng.normal(size=5_000))
    half_missing = np.where(rng.random(1_000) < 0.5, np.nan, rng.normal(size=1_000))
    assert present.psi(half_missing) > 1.0  # a feature that starts to go missing


def test_bins_keep_point_masses_and_missing_values_apart_and_round_trip() -> None:
    counts = QuantileBins.of(np.array([0.0] * 70 + [1.0] * 20 + [5.0] * 10 + [np.nan] * 100))
    assert counts.cuts == (0.0, 1.0)  # deciles: seven at 0, two at 1
    assert counts.labels() == ["<0", "0", "0..1", "1", ">1", "missing"]
    assert counts.shares == pytest.approx((0, 0.35, 0, 0.1, 0.05, 0.5))
    assert counts.counts(np.array([-1, 0, 0.5, 1, 3, np.nan])).tolist() == [1] * 6
    assert QuantileBins.from_dict(json.loads(json.dumps(counts.to_dict()))) == counts
    with pytest.raises(ValueError, match="3 cut points make 8 bins, not 2"):
        QuantileBins((0.0, 1.0, 5.0), (0.5, 0.5))
    with pytest.raises(ValueError, match="'cuts' and 'shares'"):
        QuantileBins.from_dict({"cuts": []})


# The reference in the bundle


def test_the_reference_is_published_in_the_bundle_and_listed_in_its_manifest(
    sentinel_home: Path, model_bytes: tuple
) -> None:
    version = publish_champion(sentinel_home, model_bytes)
    bundle = Registry(sentinel_home / "registry").bundle_dir(version)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files"][DRIFT_REFERENCE_FILE] == sha256_file(bundle / DRIFT_REFERENCE_FILE)
    loaded = read_reference(bundle)
    assert loaded == reference()
    assert loaded is not None and list(loaded.features) == list(FEATURE_NAMES)
    assert loaded.decline_rate == pytest.approx(np.mean(scores_of(4_000, 0) >= THRESHOLD))
    # Changed after publishing: refused, not read.
    make_writable(bundle)
    (bundle / DRIFT_REFERENCE_FILE).write_text(json.dumps(reference(500).to_dict()))
    with pytest.raises(DriftReferenceError, match="does not match the checksum in manifest"):
        read_reference(bundle)


def test_a_bundle_published_without_a_reference_has_none(
    sentinel_home: Path, model_bytes: tuple
) -> None:
    version = publish_champion(sentinel_home, model_bytes, with_reference=False)
    bundle = Registry(sentinel_home / "registry").bundle_dir(version)
    assert DRIFT_REFERENCE_FILE not in json.loads((bundle / "manifest.json").read_text())["files"]
    assert read_reference(bundle) is None


# The live window and the judgement, as plain functions


def test_live_traffic_is_the_champions_window_and_the_decline_rate_its_own_decisions() -> None:
    now = 1_800_000_000.0
    rows, scores = feature_rows(6, 1), np.array([0.5, 0.5, 0.0, 0.0, 0.5, 0.0])
    lines = list(log_lines("v1", rows, scores, now))
    lines[0]["features"][FEATURE_INDEX["amount"]] = None  # NaN, as the service writes it
    lines[1]["decided_by"] = "challenger"  # its decision is the canary's: not the champion's
    lines[2]["features"] = None  # not sampled
    lines[3]["profile"] = "precomputed-7"  # another of its models answered
    lines[4]["champion_version"] = "v0"  # the previous champion's
    lines[5]["scored_at"] = now - 8 * DAY_S  # before the window
    del lines[0]["decided_by"]  # logs before the field: the champion decided
    duplicate = {**lines[0], "scored_at": now - 1, "champion_score": 0.0}  # scored again
    scored = pd.DataFrame([*lines, duplicate])
    live = live_traffic(scored, "v1", "full", now - 7 * DAY_S)
    assert live.events == 4  # t0 (once), t1, t2, t3
    assert sorted(live.scores.tolist()) == [0.0, 0.0, 0.5]  # t0 (its latest line), t1, t2
    assert sorted(live.declined.tolist()) == [False, False]  # t0 and t2: t1 the challenger's
    assert live.features.shape == (2, len(FEATURE_NAMES)) and live.other_models == 1
    assert np.isnan(live.features[:, FEATURE_INDEX["amount"]]).sum() == 1  # t0's null
    assert live_traffic(pd.DataFrame(), "v1", "full", 0.0).events == 0
    anonymous = pd.DataFrame([{**line, "transaction_id": None} for line in lines[:4]])
    assert live_traffic(anonymous, "v1", "full", now - 7 * DAY_S).events == 4  # not one


def test_scores_and_decline_rate_that_moved_are_warnings_with_their_numbers() -> None:
    now, n = 1_800_000_000.0, 800
    shifted = pd.DataFrame(log_lines("v1", feature_rows(n, 5), scores_of(n, 5, 0.1), now))
    report = judge_drift(reference(), live_traffic(shifted, "v1", "full", 0.0), DriftPolicy(), "v1")
    assert report.status == "drifted" and report.drifted_features == []
    assert report.score_psi is not None and report.score_psi > 0.25
    assert report.decline_rate_change is not None and report.decline_rate_change > 0.5
    assert report.warnings[0].startswith(f"score PSI {report.score_psi:.3f} > 0.25")
    assert "decline rate " in report.warnings[1] and "bound 2 points)" in report.warnings[1]
    unsampled = [{**line, "features": None} for line in log_lines(
        "v1", feature_rows(n, 6), scores_of(n, 6), now)]  # fmt: skip
    partial = judge_drift(
        reference(), live_traffic(pd.DataFrame(unsampled), "v1", "full", 0.0), DriftPolicy(), "v1"
    )
    assert partial.status == "stable" and partial.feature_psi == {}
    assert "features: 0 events logged with their feature vector, 500 needed" in partial.message


# The asset, its check, the summary file and the sensor


def test_a_stable_stream_passes_and_writes_the_summary_the_service_exports(
    sentinel_home: Path, model_bytes: tuple
) -> None:
    champion = publish_champion(sentinel_home, model_bytes)
    now = time.time()
    write_log(sentinel_home, log_lines(champion, feature_rows(600, 1), scores_of(600, 1), now))
    with dg.DagsterInstance.ephemeral() as instance:
        check, metadata = materialize(sentinel_home, instance)
    assert check.passed, check.description
    assert check.description.startswith("within policy: largest feature PSI")
    assert metadata["status"].value == "stable" and metadata["events"].value == 600
    assert metadata["score_psi"].value < 0.1
    assert "| amount |" in str(metadata["feature_psi"].value)
    assert "data:image/png;base64," in str(metadata["distributions"].value)
    summary = json.loads((sentinel_home / "monitoring" / "drift.json").read_text())
    assert summary["champion_version"] == champion and summary["drifted"] is False
    assert summary["events"] == 600 and now - 5 < summary["generated_at"] <= time.time()
    assert set(summary["feature_psi"]) == set(FEATURE_NAMES)
    assert max(summary["feature_psi"].values()) < 0.25
    assert abs(summary["decline_rate_change"]) < 0.02
    assert summary["decline_rate_live"] - summary["decline_rate_reference"] == pytest.approx(
        summary["decline_rate_change"]
    )


def test_a_drifted_stream_warns_naming_the_features_and_the_sensor_retrains_once(
    sentinel_home: Path, model_bytes: tuple, tmp_path: Path
) -> None:
    champion = publish_champion(sentinel_home, model_bytes)
    drifted = feature_rows(600, 2, amount_factor=3.0, count_shift=4)
    write_log(sentinel_home, log_lines(champion, drifted, scores_of(600, 2), time.time()))
    enabled = policy_file(tmp_path, retrain_on_drift=True)
    with dg.DagsterInstance.ephemeral() as instance:
        check, metadata = materialize(sentinel_home, instance, enabled)
        assert not check.passed and check.description.startswith("drifted: ")
        assert "amount PSI" in check.description and "txn_count_24h PSI" in check.description
        assert check.metadata["drifted"].value is True and metadata["drifted"].value is True
        assert metadata["max_feature_psi"].value > 0.25
        summary = json.loads((sentinel_home / "monitoring" / "drift.json").read_text())
        assert summary["drifted"] is True and summary["feature_psi"]["amount"] > 0.25
        assert summary["feature_psi"]["hour_of_day"] < 0.25  # unchanged features stay low

        context = dg.build_sensor_context(
            instance=instance, resources={"policy": GovernancePolicy(path=str(enabled))}
        )
        request = drift_retrain_sensor(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key is not None and request.run_key.startswith("drift-retrain-")
        assert request.tags["sentinel/launched_by"] == "drift_retrain_sensor"
        again = drift_retrain_sensor(context)  # the next tick, same evaluation: nothing more
        assert isinstance(again, dg.SkipReason) and "already handled" in str(again.skip_message)

        off_policy = GovernancePolicy(path=str(policy_file(tmp_path, retrain_on_drift=False)))
        disabled = dg.build_sensor_context(instance=instance, resources={"policy": off_policy})
        off = drift_retrain_sensor(disabled)
        assert isinstance(off, dg.SkipReason)
        assert "drift.retrain_on_drift is false" in str(off.skip_message)


def test_too_few_events_pass_saying_so_and_no_reference_says_republish(
    sentinel_home: Path, model_bytes: tuple, tmp_path: Path
) -> None:
    champion = publish_champion(sentinel_home, model_bytes)
    write_log(sentinel_home, log_lines(champion, feature_rows(50, 3, 5.0), scores_of(50, 3), 0))
    write_log(sentinel_home, log_lines(champion, feature_rows(80, 4, 5.0), scores_of(80, 4),
                                       time.time()))  # fmt: skip
    with dg.DagsterInstance.ephemeral() as instance:
        few, metadata = materialize(sentinel_home, instance)
        assert few.passed  # 80 events, even drifted ones, are not evidence enough
        assert few.description == (
            "too few events to judge in the last 168 h: 80 scored by the champion's full "
            "model, 80 of them logged with features; 500 needed"
        )
        assert metadata["status"].value == "too_few_events"
        on_policy = GovernancePolicy(path=str(policy_file(tmp_path, retrain_on_drift=True)))
        context = dg.build_sensor_context(instance=instance, resources={"policy": on_policy})
        skipped = drift_retrain_sensor(context)
        assert isinstance(skipped, dg.SkipReason) and "no drift" in str(skipped.skip_message)

        older = publish_champion(sentinel_home, model_bytes, with_reference=False, run="old")
        missing, metadata = materialize(sentinel_home, instance)
    assert not missing.passed
    assert missing.description.startswith(f"no drift reference: republish. The champion {older}")
    assert metadata["status"].value == "no_reference" and "distributions" not in metadata
    summary = json.loads((sentinel_home / "monitoring" / "drift.json").read_text())
    assert summary["status"] == "no_reference" and summary["feature_psi"] == {}


def test_a_retrain_waits_for_the_cooldown_after_the_last_one() -> None:
    now = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    rules = DriftPolicy(retrain_on_drift=True, retrain_cooldown_hours=24)
    recent = drift_retrain_request("r2", True, rules, now - dt.timedelta(hours=3), now)
    assert isinstance(recent, dg.SkipReason)
    assert "within drift.retrain_cooldown_hours" in str(recent.skip_message)
    due = drift_retrain_request("r2", True, rules, now - dt.timedelta(hours=25), now)
    assert isinstance(due, dg.RunRequest) and due.run_key == "drift-retrain-r2"


# The policy section


def test_the_drift_policy_is_typed_and_refuses_unknown_keys(tmp_path: Path) -> None:
    shipped = load_policy().drift
    assert shipped == DriftPolicy()  # the file's values are the documented defaults
    assert (shipped.max_feature_psi, shipped.retrain_on_drift) == (0.25, False)
    with pytest.raises(PolicyError, match=r"drift\.max_feature_pis: Extra inputs"):
        load_policy(policy_file(tmp_path, max_feature_pis=0.3))
    with pytest.raises(PolicyError, match=r"drift\.min_events: Input should be greater"):
        load_policy(policy_file(tmp_path, min_events=0))
