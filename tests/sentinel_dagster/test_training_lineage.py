"""The training lineage in process: publish a champion, refuse a failing gate, add a challenger."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from sentinel_dagster import mlflow_tracking
from sentinel_dagster.cli import app
from sentinel_dagster.definitions import defs
from sentinel_dagster.resources import GovernancePolicy, ParquetIOManager, SentinelHome
from sentinel_dagster.runner import local_instance
from sentinel_dagster.sensors import promotion_sensor
from serving.bundle import BundleError, load_bundle
from serving.registry import Registry

DATA = {"cards": 2_000, "days": 35, "seed": 21}
TRAINING = ["training_set", "candidate_model", "candidate_evaluation", "promotion_decision"]


@dataclass
class Lineage:
    home: Path
    first: dg.ExecuteInProcessResult  # full lineage: becomes champion
    refused: dg.ExecuteInProcessResult  # floors out of reach: nothing published
    second: dg.ExecuteInProcessResult  # passes again: becomes challenger
    champion_after_first: str | None
    champion_after_refused: str | None


def _materialize(home: Path, instance, selection, config: dict, policy: Path | None = None):
    resources = {
        **defs.resources,
        "sentinel_home": SentinelHome(path=str(home)),
        "parquet_io_manager": ParquetIOManager(home=str(home)),
    }
    if policy is not None:
        resources["policy"] = GovernancePolicy(path=str(policy))
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        selection=selection,
        run_config=config,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def _output(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    return result.output_for_node(asset)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    home = tmp_path_factory.mktemp("lineage")
    registry = Registry(home / "registry")
    impossible = home / "strict_policy.yaml"
    impossible.write_text("promotion:\n  metric_floors:\n    pr_auc: 0.9999\n")
    full = {"ops": {"transactions": {"config": DATA}}}
    with local_instance(home) as instance:
        first = _materialize(home, instance, "*model_bundle", full)
        champion = registry.pointer("champion")
        keys = [dg.AssetKey(k) for k in [*TRAINING, "model_bundle"]]
        refused = _materialize(home, instance, keys, {}, policy=impossible)
        champion_after_refused = registry.pointer("champion")
        reseeded = {"ops": {"candidate_model": {"config": {"seed": 8}}}}
        second = _materialize(home, instance, keys, reseeded)
    return Lineage(home, first, refused, second, champion, champion_after_refused)


def test_full_lineage_publishes_a_verified_champion(lineage: Lineage) -> None:
    assert lineage.first.success
    bundle = _output(lineage.first, "model_bundle")
    assert bundle["published"] and bundle["role"] == "champion"
    assert lineage.champion_after_first == bundle["version"]
    loaded = load_bundle(Registry(lineage.home / "registry").bundle_dir(bundle["version"]))
    manifest = loaded.manifest
    assert set(manifest["files"]) == {"model.json", "model.onnx", "model_card.md", "lineage.json"}
    assert manifest["metrics"]["pr_auc"] > 0.5
    assert manifest["mlflow_run_id"] == _output(lineage.first, "candidate_model")["run_id"]
    card = (loaded.path / "model_card.md").read_text()
    assert "{{" not in card
    assert f"{manifest['metrics']['pr_auc']:.4g}" in card


def test_mlflow_records_the_run_and_mirrors_the_pointers(lineage: Lineage) -> None:
    mlflow_tracking.use_local_store(lineage.home)
    client = MlflowClient()
    model = _output(lineage.first, "candidate_model")
    run = client.get_run(model["run_id"])
    for metric in ("validation_pr_auc", "holdout_pr_auc", "holdout_recall_at_1pct_fpr"):
        assert metric in run.data.metrics, metric
    assert run.data.params["max_depth"] == "6"
    name = mlflow_tracking.REGISTERED_MODEL
    assert client.get_model_version_by_alias(name, "champion").run_id == model["run_id"]
    second = _output(lineage.second, "candidate_model")
    assert client.get_model_version_by_alias(name, "challenger").run_id == second["run_id"]


def test_a_failing_gate_publishes_nothing_and_keeps_the_champion(lineage: Lineage) -> None:
    assert lineage.refused.success  # a failed gate is an outcome, not an error
    decision = _output(lineage.refused, "promotion_decision")
    assert decision["passed"] is False
    assert any("pr_auc" in reason and "0.9999" in reason for reason in decision["reasons"])
    assert _output(lineage.refused, "model_bundle")["published"] is False
    assert lineage.champion_after_refused == lineage.champion_after_first
    registry = Registry(lineage.home / "registry")
    refused_run = _output(lineage.refused, "candidate_model")["run_id"]
    assert registry.find_run(refused_run) is None


def test_same_seed_same_metrics(lineage: Lineage) -> None:
    first = _output(lineage.first, "candidate_evaluation")["metrics"]
    again = _output(lineage.refused, "candidate_evaluation")["metrics"]  # same data and seed
    assert first == again


def test_a_later_passing_candidate_becomes_challenger(lineage: Lineage) -> None:
    assert lineage.second.success
    bundle = _output(lineage.second, "model_bundle")
    assert bundle["role"] == "challenger"
    registry = Registry(lineage.home / "registry")
    assert registry.pointer("challenger") == bundle["version"]
    assert registry.pointer("champion") == lineage.champion_after_first
    decision = _output(lineage.second, "promotion_decision")
    assert decision["champion_version"] == lineage.champion_after_first  # judged against it


def test_sensor_requests_one_publish_run_per_passing_decision(lineage: Lineage) -> None:
    with local_instance(lineage.home) as instance:
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        tick = promotion_sensor.evaluate_tick(context)
        assert [r.run_key for r in tick.run_requests] == [f"publish-{lineage.second.run_id}"]
        again = dg.build_sensor_context(instance=instance, cursor=tick.cursor, definitions=defs)
        assert promotion_sensor.evaluate_tick(again).run_requests == []


def test_publishing_the_same_candidate_twice_is_a_no_op(lineage: Lineage) -> None:
    keys = [dg.AssetKey("model_bundle")]
    with local_instance(lineage.home) as instance:
        again = _materialize(lineage.home, instance, keys, {})
    assert again.success
    assert _output(again, "model_bundle")["published"] is False
    assert len(Registry(lineage.home / "registry").versions()) == 2


def test_a_tampered_bundle_is_rejected(lineage: Lineage, tmp_path: Path) -> None:
    registry = Registry(lineage.home / "registry")
    copy = tmp_path / "bundle"
    shutil.copytree(registry.bundle_dir(registry.pointer("champion") or ""), copy)
    (copy / "model.onnx").chmod(0o644)
    (copy / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"model\.onnx does not match its sha256"):
        load_bundle(copy)


def test_check_promotion_cli_keeps_the_seed_exit_codes(lineage: Lineage, tmp_path: Path) -> None:
    evaluation = lineage.home / "candidates" / "latest_evaluation.json"
    runner = CliRunner()
    ok = runner.invoke(app, ["check-promotion", "--metadata", str(evaluation)])
    assert ok.exit_code == 0, ok.output
    assert "promotion gate passed" in ok.output
    strict = tmp_path / "strict.yaml"
    strict.write_text("promotion:\n  metric_floors:\n    pr_auc: 0.9999\n")
    failed = runner.invoke(
        app, ["check-promotion", "--metadata", str(evaluation), "--policy", str(strict)]
    )
    assert failed.exit_code == 1
    assert "pr_auc" in failed.output and "0.9999" in failed.output
    missing = runner.invoke(app, ["check-promotion", "--metadata", str(tmp_path / "none.json")])
    assert missing.exit_code == 2
    assert "metadata file not found" in missing.output
    (tmp_path / "bad.json").write_text(json.dumps({"nothing": 1}))
    bad = runner.invoke(app, ["check-promotion", "--metadata", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2


def test_materialize_policy_option_refuses_and_prints_every_reason(
    lineage: Lineage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--policy` reaches the `policy` resource; a refusal is a successful run, reasons shown."""
    monkeypatch.setenv("SENTINEL_HOME", str(lineage.home))
    strict = tmp_path / "strict.yaml"
    strict.write_text("promotion:\n  metric_floors:\n    pr_auc: 0.9999\n    roc_auc: 0.9999\n")
    result = CliRunner().invoke(
        app, ["materialize", "--select", "promotion_decision", "--policy", str(strict)]
    )
    assert result.exit_code == 0, result.output  # a refused gate is an outcome
    lines = result.output.splitlines()
    start = lines.index(
        "promotion gate refused (2 failed checks): nothing published, the champion stays"
    )
    assert lines[start + 1].startswith("  - pr_auc ") and "vs floor 0.9999" in lines[start + 1]
    assert lines[start + 2].startswith("  - roc_auc ") and "vs floor 0.9999" in lines[start + 2]
    assert Registry(lineage.home / "registry").pointer("champion") == lineage.champion_after_first
