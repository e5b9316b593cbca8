"""The shadow-comparison report's numbers and verdicts on hand-made logs."""

import numpy as np
import pandas as pd
import pytest

from sentinel_dagster.core.policy import ShadowPolicy
from sentinel_dagster.core.stability import population_stability
from sentinel_dagster.shadow.shadow_report import (
    DAY,
    attach_labels,
    compare,
    to_markdown,
)

T0 = 1_767_225_600.0  # 2026-01-01
POLICY = ShadowPolicy(min_labelled_events=100, min_fraud_labels=5, min_pr_auc_uplift=0.05,
                      max_flip_rate=0.1, label_maturity_days=7, target_fpr=0.05)  # fmt: skip


def logs(n: int = 400, frauds: int = 20, challenger_good: bool = True, seed: int = 0):
    """n events over 10 days; the challenger ranks frauds first, the champion at random."""
    rng = np.random.default_rng(seed)
    is_fraud = np.zeros(n, dtype=bool)
    is_fraud[rng.choice(n, frauds, replace=False)] = True
    champion = rng.uniform(0, 0.5, n)
    challenger = np.where(is_fraud, 0.9, rng.uniform(0, 0.5, n)) if challenger_good else champion
    ids = [f"t{i}" for i in range(n)]
    scored = pd.DataFrame({
        "transaction_id": ids, "event_time": T0 + np.linspace(0, 10 * DAY, n),
        "champion_version": "A", "champion_score": champion, "champion_threshold": 0.6,
        "champion_call_us": 20.0, "challenger_version": "B", "challenger_score": challenger,
        "challenger_threshold": 0.6, "challenger_call_us": 10.0,
    })  # fmt: skip
    feedback = pd.DataFrame({
        "transaction_id": [i for i, f in zip(ids, is_fraud, strict=True) if f],
        "is_fraud": True, "label_time": T0 + 30 * DAY,
    })  # fmt: skip
    return scored, feedback


def test_a_better_challenger_on_enough_labels_is_promoted() -> None:
    scored, feedback = logs()
    report = compare(scored, feedback, "A", "B", POLICY)
    assert report.verdict == "promote", report.reasons
    assert report.events_compared == report.labelled_events == 400
    assert report.fraud_labels == 20
    assert report.pr_auc["challenger"] == pytest.approx(1.0)
    assert report.pr_auc["champion"] < 0.3
    assert report.recall_at_target_fpr["challenger"] == 1.0
    assert report.flips_to_decline == 20 and report.flips_to_approve == 0  # only the frauds
    assert report.call_us_p50 == {"champion": 20.0, "challenger": 10.0}
    assert "verdict: **promote**" in to_markdown(report, pd.Timestamp("2026-02-01").to_pydatetime())


@pytest.mark.parametrize(
    ("policy_change", "reason"),
    [
        ({"min_labelled_events": 10_000}, "too few labelled events: 400 < 10000"),
        ({"min_fraud_labels": 50}, "too few fraud labels: 20 < 50"),
        ({"max_flip_rate": 0.01}, "flip rate 0.0500 is above 0.0100"),
    ],
)
def test_each_unmet_condition_holds_with_its_reason(policy_change: dict, reason: str) -> None:
    scored, feedback = logs()
    report = compare(scored, feedback, "A", "B", POLICY.model_copy(update=policy_change))
    assert report.verdict == "hold"
    assert report.reasons == [reason]


def test_traffic_mostly_too_late_for_the_online_state_is_not_judged() -> None:
    scored, feedback = logs()
    scored["state"] = "added"
    scored.loc[: int(0.3 * len(scored)) - 1, "state"] = "too_late"  # e.g. an old log replayed
    report = compare(scored, feedback, "A", "B", POLICY)
    assert report.verdict == "hold" and report.too_late_events == 120
    assert report.reasons == [
        "120 of 400 events (30%) reached the service too late for its online state (more "
        "than 10%): scored without their cards' recent history, they cannot judge either "
        "model; replay traffic with fresh ids and times"
    ]
    assert "| events too late for the online state | 120 |" in to_markdown(
        report, pd.Timestamp("2026-02-01").to_pydatetime()
    )
    # A few late events are the normal life of a stream: judged.
    scored["state"] = "added"
    scored.loc[:19, "state"] = "too_late"
    assert compare(scored, feedback, "A", "B", POLICY).verdict == "promote"


def test_a_score_distribution_moved_beyond_a_psi_bound_holds_and_psi_is_explained() -> None:
    scored, feedback = logs()
    report = compare(scored, feedback, "A", "B", POLICY)
    assert report.verdict == "promote" and 0 < report.psi < 0.1
    text = to_markdown(report, pd.Timestamp("2026-02-01").to_pydatetime())
    assert "PSI (population stability index) compares" in text
    assert "the score distributions barely differ" in text
    scored["challenger_score"] = np.clip(scored["challenger_score"] + 0.4, 0, 1)  # shifted up
    unbounded = POLICY.model_copy(update={"max_flip_rate": 1})  # the default: not judged
    assert POLICY.max_score_psi is None
    assert compare(scored, feedback, "A", "B", unbounded).verdict == "promote"
    strict = unbounded.model_copy(update={"max_score_psi": 0.25})
    shifted = compare(scored, feedback, "A", "B", strict)
    assert shifted.psi > 0.25
    assert shifted.reasons == [
        f"score PSI {shifted.psi:.3f} is above 0.250: the challenger scores this traffic very "
        "differently from the champion; review it first"
    ]
    assert "the challenger scores this traffic very differently" in to_markdown(
        shifted, pd.Timestamp("2026-02-01").to_pydatetime()
    )


def test_no_uplift_holds() -> None:
    scored, feedback = logs(challenger_good=False)
    report = compare(scored, feedback, "A", "B", POLICY)
    assert report.verdict == "hold"
    assert report.reasons == ["PR-AUC uplift +0.0000 is below the required +0.0500"]
    assert report.decision_agreement == 1.0
    assert report.psi == pytest.approx(0.0)


def test_labels_of_one_class_only_hold_instead_of_skipping_the_comparison() -> None:
    scored, feedback = logs()
    frauds = scored[scored["transaction_id"].isin(feedback["transaction_id"])]
    lenient = POLICY.model_copy(
        update={"min_labelled_events": 1, "min_fraud_labels": 1, "label_maturity_days": 1_000,
                "max_flip_rate": 1.0, "max_score_psi": 100.0}
    )  # fmt: skip
    report = compare(frauds, feedback, "A", "B", lenient)
    assert report.verdict == "hold"
    assert report.reasons == ["PR-AUC cannot be compared: the labelled events are all of one class"]


def test_only_the_current_pair_and_model_answers_are_compared() -> None:
    scored, feedback = logs()
    scored.loc[:49, "challenger_version"] = "older challenger"
    scored.loc[50:59, "champion_score"] = None  # the heuristic answered those
    report = compare(scored, feedback, "A", "B", POLICY)
    assert report.events_compared == 340


def test_nothing_to_compare_holds_with_the_reason() -> None:
    scored, feedback = logs()
    assert compare(scored, feedback, "A", None, POLICY).reasons == [
        "no challenger is being shadowed"
    ]
    assert compare(pd.DataFrame(), feedback, "A", "B", POLICY).reasons == [
        "no event was scored by both models yet"
    ]


def test_labels_mature_with_time_and_frauds_count_once_reported() -> None:
    events = pd.DataFrame({"transaction_id": ["old", "young", "fraud"],
                           "event_time": [T0, T0 + 9 * DAY, T0 + 9 * DAY]})  # fmt: skip
    feedback = pd.DataFrame({"transaction_id": ["fraud"], "is_fraud": [True],
                             "label_time": [T0 + 10 * DAY]})  # fmt: skip
    labels = attach_labels(events, feedback, maturity_days=7)
    assert labels.tolist()[0] == 0.0  # 10 days old at the clock: genuine
    assert np.isnan(labels.tolist()[1])  # 1 day old, no chargeback yet: unknown
    assert labels.tolist()[2] == 1.0


def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 5_000)
    assert population_stability(base, rng.uniform(0, 1, 5_000)) < 0.01
    assert population_stability(base, rng.uniform(0.5, 1, 5_000)) > 0.5
    assert population_stability(np.full(100, 0.3), np.full(100, 0.9)) > 1.0  # degenerate


def test_logs_are_read_from_the_day_the_challenger_went_live(tmp_path) -> None:
    import datetime as dt

    from sentinel_dagster.shadow.shadow_report import read_log

    (tmp_path / "scored-20260101.jsonl").write_text('{"transaction_id": "old"}\n')
    (tmp_path / "scored-20260105.jsonl").write_text('{"transaction_id": "a"}\n')
    (tmp_path / "scored-20260105-1.jsonl").write_text('{"transaction_id": "b"}\n\n')
    (tmp_path / "feedback-20260106.jsonl").write_text('{"transaction_id": "f"}\n{"transac')
    since = read_log(tmp_path, "scored", dt.date(2026, 1, 3))
    assert since["transaction_id"].tolist() == ["a", "b"]
    assert len(read_log(tmp_path, "scored")) == 3
    assert read_log(tmp_path / "missing", "scored").empty
    assert read_log(tmp_path, "feedback")["transaction_id"].tolist() == ["f"]  # cut line skipped


def test_the_comparison_is_broken_down_by_request_profile() -> None:
    scored, feedback = logs()
    # Half the traffic sent precomputed features: both bundles answered with their
    # precomputed-7 models; a few got the champion's full model (it lacked the profile).
    profile = np.where(np.arange(len(scored)) % 2 == 0, "full", "precomputed-7")
    scored["profile"] = profile
    scored["challenger_profile"] = profile
    scored.loc[scored.index[-10:], "profile"] = "full"
    report = compare(scored, feedback, "A", "B", POLICY)
    assert set(report.profiles) == {"full", "precomputed-7", "full vs precomputed-7"}
    assert sum(p["events"] for p in report.profiles.values()) == report.events_compared
    assert report.profiles["full vs precomputed-7"]["events"] == 5  # the odd ones of the last 10
    seven = report.profiles["precomputed-7"]
    frauds = int(feedback["transaction_id"].isin(scored.loc[profile == "precomputed-7",
                                                            "transaction_id"]).sum())  # fmt: skip
    assert seven["labelled_events"] == 195 and seven["fraud_labels"] <= frauds
    assert seven["pr_auc_challenger"] == pytest.approx(1.0)
    markdown = to_markdown(report, pd.Timestamp("2026-02-01").to_pydatetime())
    assert "| precomputed-7 | 195 |" in markdown


def test_logs_without_profiles_count_as_the_full_model() -> None:
    scored, feedback = logs()
    report = compare(scored, feedback, "A", "B", POLICY)
    assert list(report.profiles) == ["full"]
    assert report.profiles["full"]["events"] == 400


def test_a_profile_that_loses_holds_even_when_the_pooled_comparison_gains() -> None:
    scored, feedback = logs(n=800, frauds=40)
    half = np.arange(len(scored)) % 2 == 1
    scored["profile"] = np.where(half, "precomputed-7", "full")
    scored["challenger_profile"] = scored["profile"]
    # On precomputed-7 traffic the challenger is much worse than the champion.
    frauds = scored["transaction_id"].isin(feedback["transaction_id"]).to_numpy()
    scored.loc[half & frauds, "champion_score"] = 0.95
    scored.loc[half & frauds, "challenger_score"] = 0.01
    policy = ShadowPolicy(min_labelled_events=100, min_fraud_labels=5, min_pr_auc_uplift=0.0,
                          max_flip_rate=1.0, label_maturity_days=7, target_fpr=0.05)  # fmt: skip
    report = compare(scored, feedback, "A", "B", policy)
    assert report.profiles["full"]["pr_auc_challenger"] > report.profiles["full"]["pr_auc_champion"]
    assert report.verdict == "hold"
    assert any(r.startswith("precomputed-7: PR-AUC uplift -") for r in report.reasons)
    thin = ShadowPolicy(**{**policy.model_dump(), "min_labelled_events": 10_000})
    assert not any(r.startswith("precomputed-7") for r in compare(scored, feedback, "A", "B",
                                                                   thin).reasons)  # fmt: skip


def test_canary_decisions_are_reported_apart_from_the_champions() -> None:
    scored, feedback = logs()
    canary = np.arange(len(scored)) % 4 == 0  # a quarter of the cards: the challenger decided
    scored["decided_by"] = np.where(canary, "challenger", "champion")
    deciding = np.where(canary, scored["challenger_score"], scored["champion_score"])
    scored["decision"] = np.where(deciding >= 0.6, "decline", "approve")
    report = compare(scored, feedback, "A", "B", POLICY)
    assert set(report.deciders) == {"champion", "challenger"}
    challenger, champion = report.deciders["challenger"], report.deciders["champion"]
    assert challenger["events"] == 100 and champion["events"] == 300
    frauds = set(feedback["transaction_id"])
    canary_frauds = sum(t in frauds for t in scored.loc[canary, "transaction_id"])
    # the challenger ranks every fraud at 0.9 and declines it; the champion never declines
    assert challenger["frauds_declined"] == challenger["fraud_labels"] == canary_frauds
    assert champion["frauds_declined"] == 0 and champion["decline_rate"] == 0.0
    assert challenger["decline_rate"] == challenger["challenger_decline_rate"] > 0
    assert challenger["champion_decline_rate"] == 0.0  # what the champion would have done
    markdown = to_markdown(report, pd.Timestamp("2026-02-01").to_pydatetime())
    assert f"| challenger | 100 | {challenger['decline_rate']:.4f} |" in markdown
    without = compare(logs()[0], feedback, "A", "B", POLICY)  # logs before the canary
    assert list(without.deciders) == ["champion"] and "By who decided" not in to_markdown(
        without, pd.Timestamp("2026-02-01").to_pydatetime()
    )
