"""The `sentinel` CLI: exit codes, one-line errors, no tracebacks for user mistakes."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.core import paths

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_help_lists_every_command() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("simulate", "validate", "materialize"):
        assert command in result.output


def test_simulate_writes_the_file_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "tx.parquet"
    result = _run("simulate", "--cards", "200", "--days", "7", "--seed", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert f"wrote {out}" in result.output
    for word in ("rows", "fraud rate", "card_testing=", "stolen_card_spree=", "s\n"):
        assert word in result.output
    assert len(pd.read_parquet(out)) > 0


def test_simulate_runs_the_emerging_scenario_from_the_day_asked(tmp_path: Path) -> None:
    out = tmp_path / "tx.parquet"
    args = ("--cards", "400", "--days", "20", "--seed", "3", "--out", str(out))
    result = _run("simulate", *args, "--emerging-from", "2026-01-10")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    cash_outs = frame[frame["fraud_scenario"] == "atm_cash_out"]
    assert len(cash_outs) > 0
    assert cash_outs["event_time"].min() >= pd.Timestamp("2026-01-10", tz="UTC")
    bad = _run("simulate", *args, "--emerging-from", "march")
    assert bad.exit_code == 2 and "emerging_from" in bad.output


def test_simulate_defaults_to_sentinel_home(sentinel_home: Path) -> None:
    result = _run("simulate", "--cards", "50", "--days", "3")
    assert result.exit_code == 0, result.output
    assert (sentinel_home / "data" / "transactions.parquet").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cards", "0"], "cards must be at least 1"),
        (["--fraud-rate", "2"], "fraud_rate must be in (0, 0.5)"),
        (["--start", "soon"], "start must be a date"),
        (["--days", "many"], "Invalid value for '--days'"),
    ],
)
def test_simulate_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run("simulate", "--out", str(tmp_path / "x.parquet"), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x.parquet").exists()


def test_validate_good_file_exits_zero_and_builds_data_docs(
    small_parquet: Path, sentinel_home: Path
) -> None:
    result = _run("validate", str(small_parquet))
    assert result.exit_code == 0, result.output
    assert "valid:" in result.output
    assert f"data docs: {sentinel_home / 'data_docs'}" in result.output.replace("\n", "")


def test_validate_bad_file_lists_each_failure_and_exits_one(
    small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    bad = small_frame.head(500).copy()
    bad.loc[3, "amount"] = -5.0
    bad.loc[5, "transaction_id"] = bad.loc[6, "transaction_id"]
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)
    result = _run("validate", str(path), "--no-data-docs")
    assert result.exit_code == 1
    out = result.output
    assert "invalid: 2 of" in out
    assert "[amount] expect_column_values_to_be_between (amount): 1 of 500 rows unexpected" in out
    assert "e.g. amount=-5.0 transaction_id=tx000000003" in out
    assert "[keys] expect_column_values_to_be_unique (transaction_id)" in out
    assert "data docs" not in out


def test_validate_missing_column_is_named(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "nocard.parquet"
    small_frame.head(50).drop(columns=["card_id"]).to_parquet(path)
    result = _run("validate", str(path), "--no-data-docs")
    assert result.exit_code == 1
    assert "missing columns: card_id" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), (b"", "not a readable Parquet file"), (b"a,b\n", "not a readable")],
)
def test_validate_unreadable_file_exits_two(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "input.parquet"
    if content is not None:
        path.write_bytes(content)
    result = _run("validate", str(path))
    assert result.exit_code == 2
    assert message in result.output


def test_validate_with_a_broken_policy_exits_two(small_parquet: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("data:\n  max_amount: -1\n")
    result = _run("validate", str(small_parquet), "--policy", str(policy))
    assert result.exit_code == 2
    assert "data.max_amount" in result.output


def test_materialize_with_an_unknown_selection_exits_two() -> None:
    result = _run("materialize", "--select", "no_such_asset")
    assert result.exit_code == 2
    assert "no_such_asset" in result.output


def test_materialize_with_a_missing_config_file_exits_two(tmp_path: Path) -> None:
    result = _run("materialize", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "run config file not found" in result.output


def test_console_script_prints_one_line_without_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it."""
    sentinel = Path(sys.executable).with_name("sentinel")
    done = subprocess.run(
        [str(sentinel), "validate", str(tmp_path / "missing.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: file not found: {tmp_path / 'missing.parquet'}"


def test_bench_refuses_an_unknown_benchmark() -> None:
    from typer.testing import CliRunner

    from sentinel_dagster.cli.main import app as sentinel

    result = CliRunner().invoke(sentinel, ["bench", "no-such-benchmark"])
    assert result.exit_code == 2  # argparse's usage error, from the benchmarks runner


HEAVY = (
    "pandas", "numpy", "pyarrow", "dagster", "great_expectations", "mlflow", "xgboost",
    "sklearn", "fastapi", "uvicorn", "pydantic", "rich",
)  # fmt: skip
PROBE = f"""
import sys
from sentinel_dagster.cli.main import app
try:
    app(sys.argv[1:], prog_name="sentinel")
except SystemExit as exit:
    print("exit", exit.code)
print("loaded", ",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "{missing}"], "error: file not found"),
        (["features", "{missing}", "out.parquet"], "error: file not found"),
        (["train", "--data", "{missing}"], "error: file not found"),
        (["replay", "{missing}"], "error: file not found"),
        (["validate", "{folder}"], "error: expected a Parquet file, got a directory"),
        (["materialize", "--select", "nosuchasset"], "no asset 'nosuchasset': the assets are"),
        (["materialize", "--select", "group:nope"], "no asset group 'nope': the groups are"),
        (["--help"], "Usage: sentinel"),
    ],
)
def test_argument_and_file_errors_come_before_the_heavy_imports(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """What makes them answer at once (about 0.2 s here, against 8-16 s before): the data,
    Dagster, GX and ML libraries are not even imported. Structural, not timed."""
    argv = [a.format(missing=tmp_path / "missing.parquet", folder=tmp_path) for a in args]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    assert message in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "loaded "  # none of HEAVY
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--help"], None),
        (["serve", "--help"], None),
        (["simulate", "--help"], None),
        (["serve", "--port", "abc"], "Invalid value for '--port': 'abc' is not a valid int."),
        (["simulate", "--days", "x"], "Invalid value for '--days': 'x' is not a valid int."),
        (["train", "--target-fpr", "2"], "Invalid value for '--target-fpr': 2.0 is not in the "
         "range 0.0<=x<=1.0."),
        (["replay", "events.parquet", "--limit", "0"], "Invalid value for '--limit': 0 is not "
         "in the range x>=1."),
        (["bogus"], "No such command 'bogus'."),
    ],
)  # fmt: skip
def test_help_and_argument_errors_import_nothing_heavy(args: list[str], error: str | None) -> None:
    """What makes --help and a mistyped argument answer at once: not even rich or pydantic
    (typer 0.29 converts values through it: pyproject.toml keeps typer below) is imported.
    Structural, not timed. An error stays one line after the usage, exit 2, no traceback."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr
    assert done.stdout.splitlines()[-1] == "loaded "  # none of HEAVY
    if error is None:
        assert done.stdout.startswith("Usage: sentinel ")
        assert "exit 0" in done.stdout
    else:
        assert done.stderr.startswith("Usage: sentinel ")
        assert [line for line in done.stderr.splitlines() if line.strip()][-1] == f"Error: {error}"
        assert "exit 2" in done.stdout


@pytest.mark.parametrize(
    "selection",
    ["group:data", "*model_bundle", "transactions,training_set", "key:transactions+",
     "group:data and not transactions", "tag:x"],
)  # fmt: skip
def test_a_selection_the_quick_check_cannot_fault_goes_on_to_dagster(selection: str) -> None:
    from sentinel_dagster.cli.asset_names import unknown_in_selection

    assert unknown_in_selection(selection) is None


def test_materialize_star_is_every_asset_for_the_quick_check() -> None:
    from sentinel_dagster.cli.asset_names import unknown_in_selection

    assert unknown_in_selection("*") is None
    assert unknown_in_selection("* , nosuch") == (
        "no asset 'nosuch': the assets are transactions, daily_transaction_stats, "
        "transaction_features, training_set, candidate_model, candidate_evaluation, "
        "promotion_decision, model_bundle, shadow_comparison_report, champion_drift, "
        "feature_ablation"
    )


# Only PR-AUC, which the test bundles' manifests record.
PR_AUC_POLICY = """promotion:
  min_uplift_over_heuristic: {pr_auc: 0.05}
  max_regression: {pr_auc: 0.02}
"""


def _evaluation(path: Path, full_pr_auc: float, data_fingerprint: str = "0123abcd") -> Path:
    """A candidate evaluation as candidate_evaluation writes it: the full model and the
    precomputed-7 one, each beside the heuristic."""
    from serving.features import SEED_FEATURES

    def model(pr_auc: float) -> dict:
        return {"metrics": {"pr_auc": pr_auc}, "heuristic_metrics": {"pr_auc": 0.3},
                "predict_p99_us": 20.0}  # fmt: skip

    seven = {"features": list(SEED_FEATURES), **model(0.71)}
    evaluation = {**model(full_pr_auc), "profiles": {"precomputed-7": seven},
                  "data_fingerprint": data_fingerprint}  # fmt: skip
    path.write_text(json.dumps(evaluation))
    return path


def test_check_promotion_judges_against_the_served_champion(
    sentinel_home: Path, tmp_path: Path
) -> None:
    """The champion is the registry's pointer under SENTINEL_HOME (it used to be read from
    the metadata file only, so a served champion was reported as none)."""
    from serving.registry import Registry
    from tests.serving.bundles import publish_with_profiles

    policy = tmp_path / "policy.yaml"
    policy.write_text(PR_AUC_POLICY)
    alone = _run("check-promotion", "--metadata", str(_evaluation(tmp_path / "e.json", 0.75)),
                 "--policy", str(policy))  # fmt: skip
    assert alone.exit_code == 0 and "no champion yet" in alone.output  # truly none

    champion, _ = publish_with_profiles(Registry(sentinel_home / "registry"))  # pr_auc 0.8, 0.7
    # A stored training set that is not the candidate's: nothing to re-score the champion on.
    stored = paths.asset_path(sentinel_home, "training_set")
    stored.parent.mkdir(parents=True)
    pd.DataFrame({"transaction_id": ["t1"], "event_time": [pd.Timestamp("2026-01-01", tz="UTC")],
                  "period": ["holdout"], "label": [0]}).to_parquet(stored)  # fmt: skip
    worse = _run("check-promotion", "--metadata", str(_evaluation(tmp_path / "w.json", 0.75)),
                 "--policy", str(policy))  # fmt: skip
    assert worse.exit_code == 1
    assert f"champion {champion}: metrics from its manifest, measured on its own holdout" in (
        worse.output
    )
    assert "no champion yet" not in worse.output
    assert "FAIL regression:pr_auc: pr_auc 0.7500 vs champion 0.8000" in worse.output
    assert "ok  regression:pr_auc: pr_auc 0.7100 vs champion 0.7000" in worse.output  # seven
    better = _run("check-promotion", "--metadata", str(_evaluation(tmp_path / "b.json", 0.85)),
                  "--policy", str(policy))  # fmt: skip
    assert better.exit_code == 0, better.output
    assert "promotion gate passed" in better.output


def test_check_promotion_with_an_unreadable_champion_exits_two(
    sentinel_home: Path, tmp_path: Path
) -> None:
    from serving.registry import Registry
    from tests.serving.bundles import make_writable, publish_with_profiles

    registry = Registry(sentinel_home / "registry")
    champion, _ = publish_with_profiles(registry)
    make_writable(registry.bundle_dir(champion))
    (registry.bundle_dir(champion) / "manifest.json").write_text("{not json")
    result = _run("check-promotion", "--metadata", str(_evaluation(tmp_path / "e.json", 0.85)))
    assert result.exit_code == 2
    last = result.output.splitlines()[-1]
    assert last.startswith("error: the champion bundle cannot be read: ")
    assert "manifest.json" in last
