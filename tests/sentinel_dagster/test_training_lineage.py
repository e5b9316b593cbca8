"""The training lineage in process: publish a champion, refuse a failing gate, add a challenger."""

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.cli.runner import local_instance
from sentinel_dagster.core import paths
from sentinel_dagster.definitions import defs
from sentinel_dagster.defs.resources import GovernancePolicy, ParquetIOManager, SentinelHome
from sentinel_dagster.features.feature_importance import ALL_FEATURES
from sentinel_dagster.governance.signing_keys import KeyPairFiles, write_key_pair
from sentinel_dagster.monitoring.reference import read_reference
from sentinel_dagster.training import mlflow_tracking
from serving.app import create_app
from serving.bundle import BundleError, load_bundle
from serving.features import FEATURE_NAMES, SEED_FEATURES, feature_groups
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.test_heuristic import BENIGN, RISKY

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
    signing_key: KeyPairFiles  # the first run signs its bundle with it, the others do not


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
    signing_key = write_key_pair(home / "keys", "lineage")
    with local_instance(home) as instance:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SENTINEL_SIGNING_KEY_FILE", str(signing_key.private))
            first = _materialize(home, instance, "*model_bundle", full)
        champion = registry.pointer("champion")
        keys = [dg.AssetKey(k) for k in [*TRAINING, "model_bundle"]]
        refused = _materialize(home, instance, keys, {}, policy=impossible)
        champion_after_refused = registry.pointer("champion")
        reseeded = {"ops": {"candidate_model": {"config": {"seed": 8}}}}
        # Another seed on a small month moves the precomputed-7 model's PR-AUC by a few
        # points either way; this run is about the lifecycle, so it tolerates that.
        loose = home / "loose_policy.yaml"
        loose.write_text("promotion:\n  max_regression:\n    pr_auc: 0.2\n")
        second = _materialize(home, instance, keys, reseeded, policy=loose)
    return Lineage(home, first, refused, second, champion, champion_after_refused, signing_key)


def test_full_lineage_publishes_a_verified_champion(lineage: Lineage) -> None:
    assert lineage.first.success
    bundle = _output(lineage.first, "model_bundle")
    assert bundle["published"] and bundle["role"] == "champion"
    assert lineage.champion_after_first == bundle["version"]
    loaded = load_bundle(Registry(lineage.home / "registry").bundle_dir(bundle["version"]))
    manifest = loaded.manifest
    assert set(manifest["files"]) == {
        "model.json", "model.onnx", "model_card.md", "lineage.json",
        "profile-precomputed-7.json", "profile-precomputed-7.onnx", "proof.json",
        "drift_reference.json",
    }  # fmt: skip
    # The drift watch's reference: the full model's features and scores on its holdout.
    reference = read_reference(loaded.path)
    assert reference is not None and reference.model == "full"
    assert list(reference.features) == list(manifest["features"])
    assert reference.threshold == manifest["threshold"]
    assert 0.0 < reference.decline_rate < 0.1 and reference.computed_from.startswith("holdout ")
    # Real holdout rows and XGBoost's scores for every model: re-scored at load time.
    proof = json.loads((loaded.path / "proof.json").read_text())
    assert set(proof) == {"full", "precomputed-7"}
    assert len(proof["full"]["rows"]) == 64 and len(proof["full"]["rows"][0]) == 37
    assert len(proof["precomputed-7"]["rows"][0]) == 7
    assert 0 < sum(s > loaded.models["full"].threshold for s in proof["full"]["scores"]) < 64
    assert manifest["metrics"]["pr_auc"] > 0.5
    assert manifest["mlflow_run_id"] == _output(lineage.first, "candidate_model")["run_id"]
    card = (loaded.path / "model_card.md").read_text()
    assert "{{" not in card
    assert f"{manifest['metrics']['pr_auc']:.4g}" in card
    # The precomputed-7 model: its own features, threshold, metrics, parity and card section.
    assert set(loaded.models) == {"full", "precomputed-7"}
    seven = manifest["profiles"]["precomputed-7"]
    assert sorted(seven["features"]) == sorted(SEED_FEATURES)
    assert loaded.models["precomputed-7"].predictor.width == 7
    assert 0.0 < seven["threshold"] < 1.0 and seven["threshold"] != manifest["threshold"]
    assert 0.0 <= seven["onnx_parity_max_abs_diff"] <= 1e-5
    assert seven["metrics"]["pr_auc"] < manifest["metrics"]["pr_auc"]  # fewer features
    assert "### precomputed-7" in card and f"{seven['metrics']['pr_auc']:.4g}" in card


def test_each_profile_model_is_evaluated_and_gated_beside_the_full_model(lineage: Lineage) -> None:
    evaluation = _output(lineage.first, "candidate_evaluation")
    seven = evaluation["profiles"]["precomputed-7"]
    # The heuristic judged on what such a request carries: the seven features only.
    assert seven["heuristic_metrics"]["pr_auc"] != evaluation["heuristic_metrics"]["pr_auc"]
    assert seven["metrics"]["pr_auc"] > seven["heuristic_metrics"]["pr_auc"]
    assert seven["predict_p99_us"] > 0
    # The second candidate is judged against the champion's model of each profile.
    decision = lineage.second.asset_materializations_for_node("promotion_decision")[0]
    checks = decision.metadata["checks"].value
    assert "| precomputed-7 | regression:pr_auc |" in checks
    assert "| full | regression:pr_auc |" in checks


def test_the_published_profile_model_scores_the_earlier_systems_examples(
    lineage: Lineage,
) -> None:
    with TestClient(create_app(ServiceSettings(home=lineage.home))) as client:
        risky = client.post("/v1/score", json=RISKY).json()
        benign = client.post("/v1/score", json=BENIGN).json()
        raw = client.post("/v1/score", json={**RISKY, "card_id": "c1", "transaction_id": "t1",
                                             "merchant_id": "m1"}).json()  # fmt: skip
        models = client.get("/v1/models").json()
    assert (risky["profile"], risky["scored_by"]) == ("precomputed-7", "model")
    champion = {p["profile"]: p for p in models["profiles"]["champion"]}
    assert risky["threshold"] == champion["precomputed-7"]["threshold"]  # its own threshold
    assert "night_online" in risky["reasons"]
    assert (benign["profile"], benign["decision"]) == ("precomputed-7", "approve")
    # On this small simulated month the seven features rank the risky example well above
    # the benign one; whether it is declined depends on the data (the default lineage's
    # model declines it: docs/BENCHMARKS.md; a model on data like the earlier system's:
    # test_precomputed.py).
    assert risky["fraud_probability"] > 2 * benign["fraud_probability"]
    assert raw["profile"] == "full" and "profile_unavailable" not in raw  # a card: online state
    assert set(champion) == {"full", "precomputed-7"}
    assert len(champion["precomputed-7"]["features"]) == 7


def test_mlflow_records_the_run_and_mirrors_the_pointers(lineage: Lineage) -> None:
    experiment = mlflow_tracking.use_local_store(lineage.home)
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
    kind = client.get_experiment(experiment).tags[mlflow_tracking.EXPERIMENT_KIND_TAG]
    assert kind == "custom_model_development"  # opens as classic ML, not GenAI


def test_the_mlflow_run_links_the_dagster_run_the_code_the_data_and_the_bundle(
    lineage: Lineage,
) -> None:
    mlflow_tracking.use_local_store(lineage.home)
    client = MlflowClient()
    model = _output(lineage.first, "candidate_model")
    run = client.get_run(model["run_id"])
    assert run.info.run_name == f"candidate_model-{lineage.first.run_id[:8]}"
    tags = run.data.tags
    assert tags[mlflow_tracking.DAGSTER_RUN_TAG] == lineage.first.run_id
    assert tags[mlflow_tracking.DATA_FINGERPRINT_TAG] == model["data_fingerprint"]
    assert re.fullmatch("[0-9a-f]{40}", tags["mlflow.source.git.commit"])  # a checkout
    bundle = _output(lineage.first, "model_bundle")["version"]
    assert tags[mlflow_tracking.BUNDLE_VERSION_TAG] == bundle
    version = client.get_model_version(
        mlflow_tracking.REGISTERED_MODEL, model["mlflow_model_version"]
    )
    assert version.tags[mlflow_tracking.BUNDLE_VERSION_TAG] == bundle
    refused = client.get_run(_output(lineage.refused, "candidate_model")["run_id"])
    assert mlflow_tracking.BUNDLE_VERSION_TAG not in refused.data.tags  # never published
    # The train, validation and holdout rows as datasets: schema, row count and digest.
    training_set = pd.read_parquet(paths.asset_path(lineage.home, "training_set"))
    periods = training_set["period"].value_counts()
    datasets = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert set(datasets) == {"training", "validation", "evaluation"}
    for context, period in (("training", "train"), ("evaluation", "holdout")):
        dataset = datasets[context]
        assert dataset.name == f"training_set.{period}"
        assert json.loads(dataset.profile)["num_rows"] == periods[period]
        columns = [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]]
        assert columns == [*FEATURE_NAMES, "label"]
    assert datasets["training"].digest != datasets["evaluation"].digest


def test_the_registered_version_has_a_signature_an_example_and_its_served_onnx_model(
    lineage: Lineage,
) -> None:
    experiment = mlflow_tracking.use_local_store(lineage.home)
    client = MlflowClient()
    model = _output(lineage.first, "candidate_model")
    uri = f"models:/{mlflow_tracking.REGISTERED_MODEL}/{model['mlflow_model_version']}"
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.input_names() == list(FEATURE_NAMES)
    (output,) = info.signature.outputs.inputs  # the fraud probability
    assert output.type == np.dtype("float64")
    example = mlflow.models.Model.load(uri).load_input_example(
        mlflow.artifacts.download_artifacts(uri)
    )
    assert list(example.columns) == list(FEATURE_NAMES) and len(example) == 5
    # The ONNX model the service runs, logged in the same run: the bundle's file, byte for byte.
    run = client.get_run(model["run_id"])
    logged = mlflow.search_logged_models(
        experiment_ids=[experiment],
        filter_string=f"source_run_id = '{model['run_id']}'",
        output_format="list",
    )
    assert {m.name for m in logged} == {"model", "onnx_model"}
    (onnx_model,) = [m for m in logged if m.name == "onnx_model"]
    served = run.data.tags[mlflow_tracking.SERVED_MODEL_TAG]
    assert served == onnx_model.model_uri
    version = client.get_model_version(
        mlflow_tracking.REGISTERED_MODEL, model["mlflow_model_version"]
    )
    assert version.tags[mlflow_tracking.SERVED_MODEL_TAG] == served
    published = _output(lineage.first, "model_bundle")["version"]
    bundle = Registry(lineage.home / "registry").bundle_dir(published)
    folder = Path(mlflow.artifacts.download_artifacts(served))
    assert (folder / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert run.data.tags[mlflow_tracking.SERVED_FILE_TAG] == "model.onnx"
    assert run.data.tags[mlflow_tracking.SERVED_SHA256_TAG] == manifest["files"]["model.onnx"]
    assert "The service runs `onnx_model`" in run.data.tags["mlflow.note.content"]
    # Both load through MLflow and agree on the example, as the parity proof says.
    xgboost_scores = mlflow.pyfunc.load_model(uri).predict(example)
    onnx_scores = mlflow.pyfunc.load_model(served).predict(example.to_numpy(np.float32))
    np.testing.assert_allclose(onnx_scores["probabilities"][:, 1], xgboost_scores, atol=1e-5)


def test_the_ablation_runs_on_demand_on_the_latest_candidate(lineage: Lineage) -> None:
    assert not lineage.first.asset_materializations_for_node("feature_ablation")  # not default
    config = {"ops": {"feature_ablation": {"config": {"max_train_rows": 5_000}}}}
    with local_instance(lineage.home) as instance:
        result = _materialize(lineage.home, instance, [dg.AssetKey("feature_ablation")], config)
    assert result.success
    rows = {row["removed"]: row for row in _output(result, "feature_ablation")}
    assert set(rows) == {ALL_FEATURES, *feature_groups()}
    assert rows[ALL_FEATURES]["pr_auc_change"] == 0.0
    assert any(row["pr_auc_change"] != 0.0 for row in rows.values())
    model = _output(lineage.second, "candidate_model")  # the latest candidate
    assert (Path(model["model_dir"]) / "ablation.csv").exists()
    mlflow_tracking.use_local_store(lineage.home)
    artifacts = {a.path for a in MlflowClient().list_artifacts(model["run_id"])}
    assert "ablation.csv" in artifacts
    metadata = result.asset_materializations_for_node("feature_ablation")[0].metadata
    assert metadata["seconds"].value > 0 and ALL_FEATURES in metadata["ablation"].value
    assert _output(lineage.first, "candidate_evaluation")["ablation"] is None


def test_the_evaluation_still_runs_the_ablation_when_its_config_asks(lineage: Lineage) -> None:
    config = {"ops": {"candidate_evaluation": {"config": {"ablation": True}}}}
    with local_instance(lineage.home) as instance:
        result = _materialize(lineage.home, instance, [dg.AssetKey("candidate_evaluation")], config)
    assert result.success
    rows = {row["removed"] for row in _output(result, "candidate_evaluation")["ablation"]}
    assert rows == {ALL_FEATURES, *feature_groups()}


def test_the_bundle_is_signed_with_the_configured_key_and_says_so(lineage: Lineage) -> None:
    metadata = lineage.first.asset_materializations_for_node("model_bundle")[0].metadata
    key_id = lineage.signing_key.key_id
    assert metadata["signed"].value is True and metadata["signing_key_id"].value == key_id
    trusted = ServiceSettings(bundle_public_keys=str(lineage.signing_key.public))
    version = _output(lineage.first, "model_bundle")["version"]
    bundle_dir = Registry(lineage.home / "registry").bundle_dir(version)
    assert load_bundle(bundle_dir, trusted_keys=trusted.trusted_bundle_keys()).signed_by == key_id
    unsigned = lineage.second.asset_materializations_for_node("model_bundle")[0].metadata
    assert unsigned["signed"].value is False  # no key in the environment


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


def test_a_decision_made_without_publishing_is_published_by_the_automation(
    lineage: Lineage,
) -> None:
    bundle = dg.AssetKey("model_bundle")
    with local_instance(lineage.home) as instance:
        # Every run so far had model_bundle itself: nothing to repeat.
        publishing = dg.AssetSelection.assets(bundle)  # the hourly report: test_definitions
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=publishing
        )
        assert first.get_num_requested(bundle) == 0
        # A decision made without it (as retrain_job and the nightly schedule make it).
        loose = lineage.home / "loose_policy.yaml"
        decided = _materialize(
            lineage.home, instance, [dg.AssetKey("promotion_decision")], {}, policy=loose
        )
        assert _output(decided, "promotion_decision")["passed"] is True
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert after.get_num_requested(bundle) == 1
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        assert again.get_num_requested(bundle) == 0  # requested once, not at every tick


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
    evaluation = lineage.home / "candidates" / "latest_evaluation.json"  # the second's
    runner = CliRunner(env={"SENTINEL_HOME": str(lineage.home)})
    loose = lineage.home / "loose_policy.yaml"  # the one the second candidate passed
    ok = runner.invoke(
        app, ["check-promotion", "--metadata", str(evaluation), "--policy", str(loose)]
    )
    assert ok.exit_code == 0, ok.output
    assert "promotion gate passed" in ok.output
    # Judged against the served champion, re-scored on this candidate's holdout as the
    # lineage's gate did: the same checks as the second run's promotion_decision.
    champion = lineage.champion_after_first
    assert f"champion {champion}: metrics re-scored on the candidate's holdout" in ok.output
    assert "no champion yet" not in ok.output
    decision = lineage.second.asset_materializations_for_node("promotion_decision")[0]
    for row in decision.metadata["checks"].value.splitlines()[2:]:
        _, check, result, detail = row.strip("| ").split(" | ")
        if check != "latency":  # measured again by each evaluation
            assert f"{'ok ' if result == 'pass' else 'FAIL'} {check}: {detail}" in ok.output
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
    (start,) = [i for i, line in enumerate(lines) if line.startswith("promotion gate refused")]
    refused = [line.split(" vs ")[0] for line in lines[start + 1 :] if line.startswith("  - ")]
    assert lines[start] == (
        f"promotion gate refused ({len(refused)} failed checks): nothing published, "
        "the champion stays"
    )
    floors = [line for line in lines[start + 1 :] if "vs floor 0.9999" in line]
    # Both floors, for the full model and for the precomputed-7 one, every reason in one block.
    assert [f.split(" ")[3].rstrip(":") for f in floors] == [
        "pr_auc", "roc_auc", "precomputed-7", "precomputed-7",
    ]  # fmt: skip
    assert Registry(lineage.home / "registry").pointer("champion") == lineage.champion_after_first
