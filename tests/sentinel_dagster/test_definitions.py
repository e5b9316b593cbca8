"""Dagster: the definitions load, and the data group materializes with blocking checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.cli.runner import local_instance, materialize_lineage
from sentinel_dagster.data.validation import CHECKS
from sentinel_dagster.definitions import defs

REPO = Path(__file__).resolve().parents[2]
SMALL_RUN = {"ops": {"transactions": {"config": {"cards": 300, "days": 14, "seed": 2}}}}


def _run(instance: dg.DagsterInstance, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        selection="group:data",
        run_config=config,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def _source(path: Path) -> dict:
    return {"ops": {"transactions": {"config": {"source_path": str(path)}}}}


def test_all_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} >= {
        "transactions",
        "daily_transaction_stats",
        "transaction_features",
    }
    for job in ("main_job", "retrain_job", "publish_job"):
        assert defs.resolve_job_def(job) is not None
    nightly = defs.resolve_schedule_def("nightly_retrain_schedule")
    assert nightly.cron_schedule == "0 2 * * *"
    # Every schedule and sensor runs once the daemon does: none waits to be switched on.
    for schedule in defs.schedules or []:
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING, schedule.name
    for sensor in defs.sensors or []:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name
    assert defs.resolve_sensor_def("automation_sensor") is not None
    retrain = defs.resolve_job_def("retrain_job").asset_layer.executable_asset_keys
    assert dg.AssetKey("promotion_decision") in retrain
    assert dg.AssetKey("model_bundle") not in retrain
    lineage = defs.resolve_job_def("main_job").asset_layer.executable_asset_keys
    assert dg.AssetKey("model_bundle") in lineage
    assert dg.AssetKey("feature_ablation") not in lineage | retrain  # on demand only
    checks = defs.resolve_asset_graph().asset_check_keys
    assert {c.name for c in checks if c.asset_key.to_user_string() == "transactions"} == set(CHECKS)
    assert {c.name for c in checks if c.asset_key.to_user_string() != "transactions"} == {
        "transaction_features_valid",
        "champion_drift_within_policy",  # a warning, never blocking
    }
    drift = defs.resolve_schedule_def("drift_watch_schedule")
    assert drift.cron_schedule == "45 * * * *" and drift.job_name == "drift_watch_job"
    assert defs.resolve_sensor_def("drift_retrain_sensor").job_name == "retrain_job"


def test_the_dg_project_lists_the_defs_folders_definitions(sentinel_home: Path) -> None:
    """What `dg dev` and `dg check defs` load: the project of pyproject.toml [tool.dg]."""
    dg_cli = Path(sys.executable).with_name("dg")
    local_instance(sentinel_home).dispose()  # creates SENTINEL_HOME/dagster with dagster.yaml
    done = subprocess.run(
        [str(dg_cli), "list", "defs", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "DAGSTER_HOME": str(sentinel_home / "dagster"),
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
        },
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = json.loads(done.stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert assets == {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {j["name"] for j in listed["jobs"]} >= {"main_job", "retrain_job", "promote_job"}
    assert {s["name"] for s in listed["sensors"]} == {
        "automation_sensor",
        "shadow_promotion_sensor",
        "drift_retrain_sensor",
    }


def test_good_data_materializes_with_every_check_passing(sentinel_home: Path) -> None:
    with local_instance(sentinel_home) as instance:
        result = _run(instance, SMALL_RUN)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == set(CHECKS)
    assert all(e.passed for e in evaluations)
    docs = evaluations[0].metadata["data_docs"].value
    assert Path(str(docs)).is_file()
    assert Path(str(docs)).is_relative_to(sentinel_home / "data_docs")
    stored = pd.read_parquet(sentinel_home / "assets" / "transactions.parquet")
    assert len(stored) > 1_000
    stats = pd.read_parquet(sentinel_home / "assets" / "daily_transaction_stats.parquet")
    assert len(stats) == 14
    assert stats["transactions"].sum() == len(stored)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"transactions", "daily_transaction_stats"}


def _negative_amount(frame: pd.DataFrame, folder: Path) -> tuple[pd.DataFrame, Path]:
    """2,000 events, the 11th with amount -3: (the frame, its Parquet file)."""
    bad = frame.head(2_000).copy()
    bad.loc[10, "amount"] = -3.0
    path = folder / "bad.parquet"
    bad.to_parquet(path)
    return bad, path


def test_bad_data_fails_the_blocking_check_and_stops_downstream(
    small_frame: pd.DataFrame, tmp_path: Path, sentinel_home: Path
) -> None:
    _, path = _negative_amount(small_frame, tmp_path)
    with local_instance(sentinel_home) as instance:
        result = _run(instance, _source(path))
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["amount"].passed
    assert evaluations["amount"].metadata["failed"].value == 1
    assert evaluations["keys"].passed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"transactions"}  # daily_transaction_stats never ran
    assert not (sentinel_home / "assets" / "daily_transaction_stats.parquet").exists()


def test_own_data_with_a_missing_column_fails_naming_it(
    small_frame: pd.DataFrame, tmp_path: Path, sentinel_home: Path
) -> None:
    path = tmp_path / "mine.parquet"
    small_frame.head(100).drop(columns=["merchant_id"]).to_parquet(path)
    with local_instance(sentinel_home) as instance:
        result = _run(instance, _source(path))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "transactions"
    assert "missing column 'merchant_id'" in failure.step_failure_data.user_failure_data.description


def test_own_valid_data_is_used_instead_of_the_simulator(
    small_parquet: Path, small_frame: pd.DataFrame, sentinel_home: Path
) -> None:
    with local_instance(sentinel_home) as instance:
        result = _run(instance, _source(small_parquet))
    assert result.success
    stored = pd.read_parquet(sentinel_home / "assets" / "transactions.parquet")
    assert stored["transaction_id"].tolist() == small_frame["transaction_id"].tolist()


def test_cli_runner_records_the_run_in_the_persistent_instance(sentinel_home: Path) -> None:
    said: list[str] = []
    report = materialize_lineage(
        "group:data", run_config=SMALL_RUN, home=sentinel_home, progress=said.append
    )
    assert report.success, report.failure
    # Said as the run went: each asset with its seconds, each check with its outcome.
    assert [line.split()[0] for line in said if line.split()[0] != "check"] == [
        "transactions", "daily_transaction_stats",
    ]  # fmt: skip
    stats_line = next(line for line in said if line.split()[0] == "daily_transaction_stats")
    assert f"{report.seconds['daily_transaction_stats']:.1f} s" in stats_line
    assert stats_line.endswith(str(sentinel_home / "assets" / "daily_transaction_stats.parquet"))
    checks = [line.split()[1:] for line in said if line.split()[0] == "check"]
    assert len(checks) == len(report.checks) > 0
    assert all(outcome == ["passed"] for _, *outcome in checks)
    assert ("transactions", str(sentinel_home / "assets" / "transactions.parquet")) in (
        report.materialized
    )
    with local_instance(sentinel_home) as instance:
        runs = instance.get_runs()
        # Each asset's time is on its materialization, in the run's record.
        recorded = {
            e.asset_materialization.asset_key.to_user_string(): e.asset_materialization.metadata
            for e in instance.all_logs(report.run_id)
            if e.asset_materialization is not None
        }
    assert [r.run_id for r in runs] == [report.run_id]
    # A named job with tags in the UI's run list, not `__ephemeral_asset_job__`.
    assert runs[0].job_name == "materialize"
    assert runs[0].tags["sentinel/launched_by"] == "cli"
    assert runs[0].tags["sentinel/selection"] == "group:data"
    materialized = {key for key, _ in report.materialized}
    assert materialized == {"transactions", "daily_transaction_stats"} == set(report.seconds)
    for key in materialized:
        assert recorded[key]["seconds"].value == report.seconds[key] >= 0
    # After the live lines, the report says only what they did not: no asset, no passed check.
    summary = report.lines(ui_hint=False)
    assert summary == [f"run {report.run_id}: success", f"GX Data Docs: {report.data_docs}"]


@pytest.mark.parametrize("bad", [{"cards": 0}, {"fraud_rate": 0.9}])
def test_invalid_simulator_config_fails_with_a_clear_reason(sentinel_home: Path, bad: dict) -> None:
    config = {"ops": {"transactions": {"config": bad}}}
    said: list[str] = []
    report = materialize_lineage(
        run_config=config, home=sentinel_home, launched_by="demo", progress=said.append
    )
    assert not report.success
    assert said[0].split() == ["transactions", "FAILED"]  # nothing after it ran
    assert report.failure is not None
    assert "invalid simulator config" in report.failure
    with local_instance(sentinel_home) as instance:
        run = instance.get_run_by_id(report.run_id)
    assert run is not None and run.job_name == "main_job"
    assert run.tags["sentinel/launched_by"] == "demo"


def test_the_command_lines_asset_names_are_the_definitions() -> None:
    from sentinel_dagster.cli.asset_names import ASSET_GROUPS

    graph = defs.resolve_asset_graph()
    actual = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert actual == ASSET_GROUPS


def test_a_refused_check_names_column_observation_and_rows_and_moves_the_data(
    small_frame: pd.DataFrame, tmp_path: Path, sentinel_home: Path
) -> None:
    bad, path = _negative_amount(small_frame, tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"ops:\n  transactions:\n    config:\n      source_path: {path}\n")
    result = CliRunner().invoke(
        app, ["materialize", "--select", "group:data", "--config", str(config)]
    )
    assert result.exit_code == 1
    out = result.output
    assert "  check transactions:amount: FAILED" in out
    assert "expect_column_values_to_be_between (amount): 1 of 2,000 rows unexpected" in out
    assert f"e.g. amount=-3.0 transaction_id={bad.loc[10, 'transaction_id']}" in out
    assert "Traceback" not in out and "Stack Trace" not in out
    assert out.strip().endswith("1 blocking asset check failed with ERROR severity: "
                                "transactions: amount")  # fmt: skip
    # The refused data is no longer the current `transactions`: nothing downstream reads it.
    assert not (sentinel_home / "assets" / "transactions.parquet").exists()
    (moved,) = (sentinel_home / "assets" / "refused").glob("*/transactions.parquet")
    assert f"refused data moved to {moved}" in out
    downstream = CliRunner().invoke(app, ["materialize", "--select", "daily_transaction_stats"])
    assert downstream.exit_code == 1
    assert "no stored transactions to read" in downstream.output


def test_every_asset_has_owners_tags_and_a_code_version_of_its_logic() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:fraud-ml"], key
        assert node.tags["stage"] == node.group_name, key
        assert node.tags["card_data"] in ("yes", "no"), key
        assert node.code_version is not None and len(node.code_version) == 12, key
    data = graph.get(dg.AssetKey("transactions"))
    assert data.tags["card_data"] == "yes"
    assert graph.get(dg.AssetKey("daily_transaction_stats")).tags["card_data"] == "no"


def test_a_code_version_changes_with_the_logic_it_covers(tmp_path, monkeypatch) -> None:
    import importlib

    from sentinel_dagster.defs.catalog import code_version

    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "some_logic.py"
    source.write_text("def f():\n    return 1\n")
    module = importlib.import_module("some_logic")
    before = code_version(module)
    assert code_version(module) == before  # stable while the source is
    source.write_text("def f():\n    return 2\n")
    assert code_version(module) != before


def test_the_shadow_report_runs_hourly_by_its_automation_condition() -> None:
    import datetime as dt

    report = dg.AssetKey("shadow_comparison_report")
    with dg.DagsterInstance.ephemeral() as instance:
        before = dt.datetime(2026, 4, 1, 10, 14, tzinfo=dt.UTC)
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(report),
            evaluation_time=before,
        )  # fmt: skip
        assert first.get_num_requested(report) == 0
        after = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(report),
            evaluation_time=before + dt.timedelta(minutes=2), cursor=first.cursor,
        )  # fmt: skip
        assert after.get_num_requested(report) == 1  # the 10:15 tick passed
