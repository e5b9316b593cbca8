"""The promotion gate: relative to the heuristic and the champion by default, floors optional."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.cli.runner import with_policy
from sentinel_dagster.core.policy import DEFAULT_POLICY_PATH, PromotionPolicy, load_policy
from sentinel_dagster.governance.promotion import decide, decide_bundle

# A sound model on "hard" data: it would miss the old simulator floors (roc_auc 0.9),
# yet it clearly beats the rules on the same holdout.
CANDIDATE = {"pr_auc": 0.31, "recall_at_1pct_fpr": 0.42, "roc_auc": 0.8952}
HEURISTIC = {"pr_auc": 0.18, "recall_at_1pct_fpr": 0.22, "roc_auc": 0.80}
RELATIVE = PromotionPolicy()  # the defaults: no floors


def _failed(decision) -> dict[str, str]:
    return {c.name: c.detail for c in decision.checks if not c.passed}


def test_a_candidate_that_beats_the_heuristic_by_the_margin_passes() -> None:
    decision = decide(CANDIDATE, RELATIVE, heuristic=HEURISTIC, predict_p99_us=20.0)
    assert decision.passed, decision.reasons
    assert {"uplift:pr_auc", "uplift:recall_at_1pct_fpr", "champion", "latency"} <= {
        c.name for c in decision.checks
    }
    assert decision.refusal() == []


def test_a_candidate_within_the_margin_of_the_heuristic_fails_naming_both_numbers() -> None:
    barely = {**CANDIDATE, "pr_auc": 0.20}  # +0.02 over the heuristic, the margin is 0.05
    decision = decide(barely, RELATIVE, heuristic=HEURISTIC)
    assert not decision.passed
    assert _failed(decision) == {
        "uplift:pr_auc": "pr_auc 0.2000 vs heuristic 0.1800: uplift +0.0200, needs at least +0.05"
    }
    assert decision.refusal() == [
        "promotion gate refused (1 of 3 checks failed):",
        f"  - {decision.reasons[0]}",
    ]


def test_missing_heuristic_metrics_fail_the_uplift_checks_with_a_clear_reason() -> None:
    decision = decide(CANDIDATE, RELATIVE)
    assert not decision.passed
    assert decision.reasons == [
        "heuristic pr_auc missing: cannot judge the uplift",
        "heuristic recall_at_1pct_fpr missing: cannot judge the uplift",
    ]
    no_uplift = PromotionPolicy(min_uplift_over_heuristic={})
    assert decide(CANDIDATE, no_uplift).passed  # a policy may drop the comparison


def test_floors_apply_only_when_configured() -> None:
    assert decide(CANDIDATE, RELATIVE, heuristic=HEURISTIC).passed
    floors = PromotionPolicy(metric_floors={"roc_auc": 0.9, "card_precision_at_100": 0.1})
    decision = decide(CANDIDATE, floors, heuristic=HEURISTIC)
    assert _failed(decision) == {
        "floor:roc_auc": "roc_auc 0.8952 vs floor 0.9",
        "floor:card_precision_at_100": "card_precision_at_100 was not measured",
    }


def test_regression_against_the_champion_beyond_tolerance_fails() -> None:
    champion = {"pr_auc": 0.40, "recall_at_1pct_fpr": 0.42}
    decision = decide(CANDIDATE, RELATIVE, champion=champion, heuristic=HEURISTIC)
    assert _failed(decision) == {
        "regression:pr_auc": "pr_auc 0.3100 vs champion 0.4000 (tolerance 0.02)"
    }
    close = {**champion, "pr_auc": 0.325}  # within the 0.02 tolerance
    assert decide(CANDIDATE, RELATIVE, champion=close, heuristic=HEURISTIC).passed


def test_every_failed_check_is_reported_together() -> None:
    slow_and_weak = {"pr_auc": 0.1, "recall_at_1pct_fpr": 0.1}
    decision = decide(slow_and_weak, RELATIVE, heuristic=HEURISTIC, predict_p99_us=900.0)
    assert set(_failed(decision)) == {"uplift:pr_auc", "uplift:recall_at_1pct_fpr", "latency"}
    assert decision.refusal()[0] == "promotion gate refused (3 of 4 checks failed):"


def test_the_shipped_policy_is_relative_with_no_floors() -> None:
    promotion = load_policy(DEFAULT_POLICY_PATH).promotion
    assert promotion.metric_floors == {}
    assert promotion.min_uplift_over_heuristic["pr_auc"] > 0
    assert "pr_auc" in promotion.max_regression
    assert PromotionPolicy().metric_floors == {}


# --- sentinel check-promotion ------------------------------------------------------------

runner = CliRunner()


def _evaluation(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"metrics": CANDIDATE, "predict_p99_us": 20.0, **extra}))
    return path


def _check(*args: str):
    result = runner.invoke(app, ["check-promotion", *args])
    assert "Traceback" not in result.output
    return result


def test_check_promotion_passes_on_uplift_over_the_heuristic(tmp_path: Path) -> None:
    result = _check("--metadata", str(_evaluation(tmp_path, heuristic_metrics=HEURISTIC)))
    assert result.exit_code == 0, result.output
    assert "ok  uplift:pr_auc: pr_auc 0.3100 vs heuristic 0.1800" in result.output
    assert "promotion gate passed" in result.output


def test_check_promotion_lists_every_failed_check_in_one_block(tmp_path: Path) -> None:
    strong_rules = {"pr_auc": 0.30, "recall_at_1pct_fpr": 0.50}
    result = _check("--metadata", str(_evaluation(tmp_path, heuristic_metrics=strong_rules)))
    assert result.exit_code == 1
    block = result.output[result.output.index("promotion gate refused") :].splitlines()
    assert block == [
        "promotion gate refused (2 of 4 checks failed):",
        "  - pr_auc 0.3100 vs heuristic 0.3000: uplift +0.0100, needs at least +0.05",
        "  - recall_at_1pct_fpr 0.4200 vs heuristic 0.5000: uplift -0.0800, needs at least +0",
    ]


def test_check_promotion_without_heuristic_metrics_fails_naming_them(tmp_path: Path) -> None:
    result = _check("--metadata", str(_evaluation(tmp_path)))
    assert result.exit_code == 1
    assert "heuristic pr_auc missing" in result.output


def test_check_promotion_on_a_bundle_manifest_reads_the_heuristic_from_lineage(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"metrics": CANDIDATE}))
    lineage = {"evaluation": {"metrics": CANDIDATE, "heuristic_metrics": HEURISTIC}}
    (tmp_path / "lineage.json").write_text(json.dumps(lineage))
    result = _check("--metadata", str(manifest))
    assert result.exit_code == 0, result.output


def test_check_promotion_applies_floors_from_a_given_policy(tmp_path: Path) -> None:
    policy = tmp_path / "floors.yaml"
    policy.write_text("promotion:\n  metric_floors:\n    roc_auc: 0.9\n")
    evaluation = _evaluation(tmp_path, heuristic_metrics=HEURISTIC)
    result = _check("--metadata", str(evaluation), "--policy", str(policy))
    assert result.exit_code == 1
    assert "  - roc_auc 0.8952 vs floor 0.9" in result.output


# --- sentinel materialize --policy -------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "policy file not found"),
        ("promotion:\n  metric_flors: {}\n", "promotion.metric_flors"),
    ],
)
def test_materialize_with_an_unusable_policy_exits_two_in_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    policy = tmp_path / "policy.yaml"
    if content is not None:
        policy.write_text(content)
    result = runner.invoke(app, ["materialize", "--policy", str(policy)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith("error: ") and message in result.output


def test_policy_option_points_the_policy_resource_at_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "mine.yaml"
    given = {"ops": {"transactions": {"config": {"cards": 10}}}, "resources": {"x": {}}}
    config = with_policy(given, policy)
    assert config["resources"]["policy"] == {"config": {"path": str(policy.resolve())}}
    assert config["resources"]["x"] == {} and config["ops"] == given["ops"]
    assert "policy" not in given["resources"]  # the caller's config is left as it was
    assert with_policy(None, policy) == {
        "resources": {"policy": {"config": {"path": str(policy.resolve())}}}
    }


def _model(metrics: dict[str, float]) -> dict:
    return {"metrics": metrics, "heuristic_metrics": HEURISTIC, "predict_p99_us": 20.0}


def test_a_bundle_passes_only_if_every_profile_model_passes() -> None:
    seven = {**CANDIDATE, "pr_auc": 0.25}
    champion = {"full": CANDIDATE, "precomputed-7": {**CANDIDATE, "pr_auc": 0.30}}
    decision = decide_bundle(
        {"full": _model(CANDIDATE), "precomputed-7": _model(seven)}, RELATIVE, champion
    )
    assert not decision.passed  # the full model holds; precomputed-7 callers would lose 0.05
    assert decision.decisions["full"].passed
    assert decision.reasons == ["precomputed-7: pr_auc 0.2500 vs champion 0.3000 (tolerance 0.02)"]
    assert "| precomputed-7 | regression:pr_auc | **FAIL** |" in decision.markdown()
    assert decision.refusal()[0].startswith("promotion gate refused (1 of ")


def test_a_profile_the_champion_lacks_is_judged_against_the_heuristic_and_says_so() -> None:
    decision = decide_bundle(
        {"full": _model(CANDIDATE), "precomputed-7": _model(CANDIDATE)},
        RELATIVE,
        champion={"full": CANDIDATE},  # published before profiles existed
    )
    assert decision.passed, decision.reasons
    seven = {c.name: c.detail for c in decision.decisions["precomputed-7"].checks}
    assert "it has no precomputed-7 model" in seven["champion"]
    none_yet = decide_bundle({"precomputed-7": _model(CANDIDATE)}, RELATIVE, champion=None)
    assert "no champion yet" in none_yet.markdown()


def test_a_model_the_champion_has_and_the_candidate_lacks_fails_coverage() -> None:
    champion = {"full": CANDIDATE, "precomputed-7": CANDIDATE}
    only_seven = decide_bundle({"precomputed-7": _model(CANDIDATE)}, RELATIVE, champion)
    assert not only_seven.passed  # raw-event callers would lose the full model
    assert only_seven.reasons == [
        "the champion answers full requests with its own model and this candidate "
        "has none: they would lose it"
    ]
    allowed = PromotionPolicy(allow_missing_models=["full"])
    assert decide_bundle({"precomputed-7": _model(CANDIDATE)}, allowed, champion).passed


def test_a_champion_model_this_holdout_cannot_score_is_said_so() -> None:
    champion = {"full": None, "precomputed-7": {**CANDIDATE, "pr_auc": 0.9}}
    decision = decide_bundle(
        {"precomputed-7": _model(CANDIDATE)}, PromotionPolicy(allow_missing_models=["full"]),
        champion,
    )  # fmt: skip
    assert decision.reasons == ["precomputed-7: pr_auc 0.3100 vs champion 0.9000 (tolerance 0.02)"]
    seven = decide_bundle({"full": _model(CANDIDATE)}, RELATIVE, {"full": None})
    details = {c.name: c.detail for c in seven.checks}
    assert "its full model cannot be scored on this holdout" in details["champion"]
