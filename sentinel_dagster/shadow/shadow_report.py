"""The shadow-comparison report: champion against challenger on live traffic.

Reads the service's scored-event log (`SENTINEL_HOME/scored/scored-*.jsonl`: both models'
scores and thresholds for every event) and its feedback log (`feedback-*.jsonl`), keeps the
events both models scored while the current pair was live, and judges them against the
`shadow:` section of the policy. A payment is labelled fraud when a fraud label for it has
arrived, and genuine once `label_maturity_days` of event time have passed without one (how
chargeback-based labels mature); younger ones are not labelled yet. Time is the latest event
or label time the service saw.
"""

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from sentinel_dagster.core.policy import ShadowPolicy
from sentinel_dagster.core.stability import population_stability
from sentinel_dagster.training.evaluation import recall_at_fpr

DAY = 86_400.0


@dataclass
class ShadowReport:
    champion: str | None
    challenger: str | None
    events_compared: int = 0
    decision_agreement: float | None = None
    flips_to_decline: int = 0  # champion approves, challenger would decline
    flips_to_approve: int = 0
    score_correlation: float | None = None  # Pearson
    score_rank_correlation: float | None = None  # Spearman
    psi: float | None = None  # challenger's score distribution against the champion's
    # Events scored after the service's lateness window (`state: too_late` in the log):
    # their features lacked the card's recent history. Logs before the field: 0.
    too_late_events: int = 0
    labelled_events: int = 0
    fraud_labels: int = 0
    pr_auc: dict[str, float] = field(default_factory=dict)
    recall_at_target_fpr: dict[str, float] = field(default_factory=dict)
    call_us_p50: dict[str, float] = field(default_factory=dict)
    call_us_p99: dict[str, float] = field(default_factory=dict)
    verdict: str = "hold"
    reasons: list[str] = field(default_factory=list)
    # By request profile: which model of each bundle answered ("full", "precomputed-7", or
    # "full vs precomputed-7" when the two bundles answered with different ones).
    profiles: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    # By who decided (the service's canary: `decided_by` in the log; older logs: champion):
    # the decisions customers got from each model, apart from what either would have done.
    deciders: dict[str, dict[str, float | int | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _log_files(folder: Path, prefix: str) -> list[tuple[str, str, int, Path]]:
    """(day, writer, rotation index, path) of each `prefix-YYYYMMDD-<host>-<pid>[-N].jsonl`
    (every service process writes its own files; older ones are `prefix-YYYYMMDD[-N].jsonl`,
    writer ""), sorted: by day, then each writer's files in the order it wrote them."""
    files = []
    for path in folder.glob(f"{prefix}-*.jsonl"):
        day, _, rest = path.stem.removeprefix(f"{prefix}-").partition("-")
        parts = rest.split("-") if rest else []
        index = parts.pop() if len(parts) in (1, 3) else "0"
        files.append((day, "-".join(parts), int(index) if index.isdigit() else 0, path))
    return sorted(files)


def read_log(folder: Path, prefix: str, since: dt.date | None = None) -> pd.DataFrame:
    """The lines of every process's `prefix-YYYYMMDD-*.jsonl` files in `folder`, from the
    files of day `since` on (files are rotated by UTC day, so older ones cannot hold newer
    lines). Lines are in file order within a file; across files, by day only."""
    rows: list[dict[str, object]] = []
    for day, _, _, path in _log_files(Path(folder), prefix):
        if since is not None and day < f"{since:%Y%m%d}":
            continue
        with path.open() as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a killed writer; blank lines
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    return pd.DataFrame(rows)


def compared_events(scored: pd.DataFrame, champion: str, challenger: str) -> pd.DataFrame:
    """Events this champion and this challenger both scored, one row per transaction."""
    needed = {"champion_version", "challenger_version", "champion_score", "challenger_score"}
    if scored.empty or not needed <= set(scored.columns):
        return pd.DataFrame()
    pair = scored[
        (scored["champion_version"] == champion)
        & (scored["challenger_version"] == challenger)
        & scored["champion_score"].notna()
        & scored["challenger_score"].notna()
        & scored["transaction_id"].notna()
    ]
    if "scored_at" in pair.columns:  # several processes' files: the latest scoring wins
        pair = pair.sort_values("scored_at", kind="stable")
    return pair.drop_duplicates("transaction_id", keep="last").reset_index(drop=True)


def attach_labels(events: pd.DataFrame, feedback: pd.DataFrame, maturity_days: float) -> pd.Series:
    """1 fraud, 0 genuine, NaN not labelled yet. The clock is the latest event or label time
    seen: time has passed at least that far."""
    clock = float(events["event_time"].max())
    if not feedback.empty:
        clock = max(clock, float(feedback["label_time"].max()))
    fraud_ids: set[str] = set()
    genuine_ids: set[str] = set()
    if not feedback.empty:
        known = feedback[feedback["label_time"] <= clock]
        fraud_ids = set(known.loc[known["is_fraud"].astype(bool), "transaction_id"])
        genuine_ids = set(known.loc[~known["is_fraud"].astype(bool), "transaction_id"])
    labels = pd.Series(np.nan, index=events.index)
    matured = events["event_time"] <= clock - maturity_days * DAY
    labels[matured | events["transaction_id"].isin(genuine_ids)] = 0.0
    labels[events["transaction_id"].isin(fraud_ids)] = 1.0
    return labels


def evidence(
    scored: pd.DataFrame,
    feedback: pd.DataFrame,
    champion: str | None,
    challenger: str | None,
    maturity_days: float,
) -> pd.DataFrame:
    """The events the pair both scored, with a `label` column (1, 0 or NaN: not yet)."""
    if champion is None or challenger is None:
        return pd.DataFrame()
    events = compared_events(scored, champion, challenger)
    if not events.empty:
        events["label"] = attach_labels(events, feedback, maturity_days)
    return events


def judge(
    events: pd.DataFrame, champion: str | None, challenger: str | None, policy: ShadowPolicy
) -> ShadowReport:
    """The report on `evidence(...)`, with its verdict."""
    report = ShadowReport(champion=champion, challenger=challenger)
    if champion is None or challenger is None:
        report.reasons.append("no challenger is being shadowed")
        return report
    report.events_compared = len(events)
    if events.empty:
        report.reasons.append("no event was scored by both models yet")
        return report
    a = events["champion_score"].to_numpy(float)
    b = events["challenger_score"].to_numpy(float)
    decline_a = a >= events["champion_threshold"].to_numpy(float)
    decline_b = b >= events["challenger_threshold"].to_numpy(float)
    report.decision_agreement = float(np.mean(decline_a == decline_b))
    report.flips_to_decline = int(np.sum(~decline_a & decline_b))
    report.flips_to_approve = int(np.sum(decline_a & ~decline_b))
    if len(events) > 1 and np.ptp(a) > 0 and np.ptp(b) > 0:  # correlation needs spread
        report.score_correlation = float(np.corrcoef(a, b)[0, 1])
        report.score_rank_correlation = float(pd.Series(a).corr(pd.Series(b), method="spearman"))
    report.psi = population_stability(a, b)
    if "state" in events:
        report.too_late_events = int((events["state"] == "too_late").sum())
    for name, column in (("champion", "champion_call_us"), ("challenger", "challenger_call_us")):
        if column in events:
            calls = events[column].dropna().to_numpy(float)
            if len(calls):
                report.call_us_p50[name] = float(np.percentile(calls, 50))
                report.call_us_p99[name] = float(np.percentile(calls, 99))

    labels = events["label"]
    known = labels.notna().to_numpy()
    y = labels[known].to_numpy(int)
    report.labelled_events, report.fraud_labels = int(known.sum()), int(y.sum())
    if 0 < report.fraud_labels < report.labelled_events:
        for name, scores in (("champion", a[known]), ("challenger", b[known])):
            report.pr_auc[name] = float(average_precision_score(y, scores))
            report.recall_at_target_fpr[name] = recall_at_fpr(y, scores, policy.target_fpr)
    report.profiles = by_profile(events)
    report.deciders = by_decider(events)
    report.reasons = _hold_reasons(report, policy)
    report.verdict = "hold" if report.reasons else "promote"
    return report


def _pr_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """None unless both classes are present."""
    if not 0 < labels.sum() < len(labels):
        return None
    return float(average_precision_score(labels, scores))


def by_profile(events: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per request profile: events, decision agreement, labels and both models' PR-AUC.
    Logs written before profiles existed count as the full model's."""
    champion = events.get("profile", pd.Series("full", index=events.index)).fillna("full")
    challenger = events.get("challenger_profile", champion).fillna(champion)
    key = champion.where(champion == challenger, champion + " vs " + challenger)
    stats: dict[str, dict[str, float | int | None]] = {}
    for name, group in events.groupby(key, sort=True):
        a, b = group["champion_score"].to_numpy(float), group["challenger_score"].to_numpy(float)
        agree = (a >= group["champion_threshold"].to_numpy(float)) == (
            b >= group["challenger_threshold"].to_numpy(float)
        )
        known = group["label"].notna().to_numpy()
        y = group["label"][known].to_numpy(int)
        stats[str(name)] = {
            "events": len(group),
            "decision_agreement": float(agree.mean()),
            "labelled_events": int(known.sum()),
            "fraud_labels": int(y.sum()),
            "pr_auc_champion": _pr_auc(y, a[known]),
            "pr_auc_challenger": _pr_auc(y, b[known]),
        }
    return stats


def by_decider(events: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per model that decided (champion, or challenger for its canary cards): events, the
    share declined, what each model would have declined on the same events, and on
    labelled ones the frauds the decisions caught and the genuine payments they declined."""
    decided = events.get("decided_by", pd.Series("champion", index=events.index))
    stats: dict[str, dict[str, float | int | None]] = {}
    for name, group in events.groupby(decided.fillna("champion"), sort=True):
        a, b = group["champion_score"].to_numpy(float), group["challenger_score"].to_numpy(float)
        would = {"champion": a >= group["champion_threshold"].to_numpy(float),
                 "challenger": b >= group["challenger_threshold"].to_numpy(float)}  # fmt: skip
        declined = (
            (group["decision"] == "decline").to_numpy()
            if "decision" in group
            else would.get(str(name), would["champion"])
        )
        known = group["label"].notna().to_numpy()
        y = group["label"][known].to_numpy(int).astype(bool)
        caught = declined[known]
        stats[str(name)] = {
            "events": len(group),
            "decline_rate": float(declined.mean()),
            "champion_decline_rate": float(would["champion"].mean()),
            "challenger_decline_rate": float(would["challenger"].mean()),
            "labelled_events": int(known.sum()),
            "fraud_labels": int(y.sum()),
            "frauds_declined": int((caught & y).sum()),
            "genuine_declined": int((caught & ~y).sum()),
        }
    return stats


def compare(
    scored: pd.DataFrame,
    feedback: pd.DataFrame,
    champion: str | None,
    challenger: str | None,
    policy: ShadowPolicy,
) -> ShadowReport:
    """`judge(evidence(...))`: the report straight from the two logs."""
    events = evidence(scored, feedback, champion, challenger, policy.label_maturity_days)
    return judge(events, champion, challenger, policy)


def _hold_reasons(report: ShadowReport, policy: ShadowPolicy) -> list[str]:
    reasons = []
    late = report.too_late_events / report.events_compared if report.events_compared else 0.0
    if late > policy.max_too_late_share:
        reasons.append(
            f"{report.too_late_events} of {report.events_compared} events ({late:.0%}) reached "
            f"the service too late for its online state (more than "
            f"{policy.max_too_late_share:.0%}): scored without their cards' recent history, "
            "they cannot judge either model; replay traffic with fresh ids and times"
        )
    bound = policy.max_score_psi
    if bound is not None and report.psi is not None and report.psi > bound:
        reasons.append(
            f"score PSI {report.psi:.3f} is above {bound:.3f}: the challenger "
            "scores this traffic very differently from the champion; review it first"
        )
    if report.labelled_events < policy.min_labelled_events:
        reasons.append(
            f"too few labelled events: {report.labelled_events} < {policy.min_labelled_events}"
        )
    if report.fraud_labels < policy.min_fraud_labels:
        reasons.append(f"too few fraud labels: {report.fraud_labels} < {policy.min_fraud_labels}")
    if not report.pr_auc:
        reasons.append("PR-AUC cannot be compared: the labelled events are all of one class")
    else:
        uplift = report.pr_auc["challenger"] - report.pr_auc["champion"]
        if uplift < policy.min_pr_auc_uplift:
            reasons.append(
                f"PR-AUC uplift {uplift:+.4f} is below the required {policy.min_pr_auc_uplift:+.4f}"
            )
    if len(report.profiles) > 1:
        reasons += _profile_regressions(report.profiles, policy)
    flips = report.flips_to_decline + report.flips_to_approve
    flip_rate = flips / report.events_compared if report.events_compared else 0.0
    if flip_rate > policy.max_flip_rate:
        reasons.append(f"flip rate {flip_rate:.4f} is above {policy.max_flip_rate:.4f}")
    return reasons


def _profile_regressions(
    profiles: dict[str, dict[str, float | int | None]], policy: ShadowPolicy
) -> list[str]:
    """A profile with enough labels of its own must not lose PR-AUC either: a gain for one
    kind of caller never pays for a loss for another. Thinner profiles are shown, not judged."""
    reasons = []
    for name, p in profiles.items():
        old, new = p["pr_auc_champion"], p["pr_auc_challenger"]
        if old is None or new is None:  # labels of one class only
            continue
        labelled, frauds = p["labelled_events"] or 0, p["fraud_labels"] or 0
        enough = labelled >= policy.min_labelled_events and frauds >= policy.min_fraud_labels
        if enough and new - old < policy.min_pr_auc_uplift:
            reasons.append(
                f"{name}: PR-AUC uplift {new - old:+.4f} is below the required "
                f"{policy.min_pr_auc_uplift:+.4f}"
            )
    return reasons


def _psi_words(psi: float | None) -> str:
    """The usual reading of a population stability index."""
    if psi is None:
        return "not computed"
    if psi < 0.1:
        return "the score distributions barely differ"
    if psi <= 0.25:
        return "they differ moderately"
    return "the challenger scores this traffic very differently"


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_markdown(report: ShadowReport, now: dt.datetime) -> str:
    def both(values: dict[str, float], digits: int = 4) -> str:
        champion, challenger = values.get("champion"), values.get("challenger")
        return f"{_number(champion, digits)} | {_number(challenger, digits)}"

    lines = [
        f"# Shadow comparison — verdict: **{report.verdict}**",
        "",
        f"Champion `{report.champion}`, challenger `{report.challenger}`; "
        f"{now:%Y-%m-%d %H:%M} UTC.",
        "",
        "| | value |",
        "|---|---|",
        f"| events scored by both | {report.events_compared} |",
        f"| decision agreement | {_number(report.decision_agreement)} |",
        f"| flips: approve → decline | {report.flips_to_decline} |",
        f"| flips: decline → approve | {report.flips_to_approve} |",
        f"| score correlation (Pearson / Spearman) | {_number(report.score_correlation)} / "
        f"{_number(report.score_rank_correlation)} |",
        f"| PSI (challenger vs champion scores) | {_number(report.psi)}: "
        f"{_psi_words(report.psi)} |",
        f"| events too late for the online state | {report.too_late_events} |",
        f"| labelled events / fraud labels | {report.labelled_events} / {report.fraud_labels} |",
        "",
        "| on labelled events | champion | challenger |",
        "|---|---|---|",
        f"| PR-AUC | {both(report.pr_auc)} |",
        f"| recall at the target FPR | {both(report.recall_at_target_fpr)} |",
        f"| model call p50 (µs) | {both(report.call_us_p50, 1)} |",
        f"| model call p99 (µs) | {both(report.call_us_p99, 1)} |",
        "",
    ]
    if report.profiles:
        lines += [
            "By request profile (which model of each bundle answered):",
            "",
            "| profile | events | agreement | labelled / frauds | PR-AUC champion "
            "| PR-AUC challenger |",
            "|---|---|---|---|---|---|",
        ]
        for name, p in report.profiles.items():
            lines.append(
                f"| {name} | {p['events']} | {_number(p['decision_agreement'])} | "
                f"{p['labelled_events']} / {p['fraud_labels']} | "
                f"{_number(p['pr_auc_champion'])} | {_number(p['pr_auc_challenger'])} |"
            )
        lines.append("")
    if "challenger" in report.deciders:
        lines += [
            "By who decided (the challenger decides its canary share of cards; decline "
            "rates of both models on the same events, and what the decisions made caught):",
            "",
            "| decided by | events | declined | champion would | challenger would "
            "| labelled / frauds | frauds declined | genuine declined |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, d in report.deciders.items():
            lines.append(
                f"| {name} | {d['events']} | {_number(d['decline_rate'])} | "
                f"{_number(d['champion_decline_rate'])} | "
                f"{_number(d['challenger_decline_rate'])} | {d['labelled_events']} / "
                f"{d['fraud_labels']} | {d['frauds_declined']} | {d['genuine_declined']} |"
            )
        lines.append("")
    lines += [
        "PSI (population stability index) compares the challenger's score distribution with "
        "the champion's on the same events, over deciles of the champion's scores: the sum "
        "of (share b - share a) x ln(share b / share a). Under 0.1 the two barely differ, "
        "0.1-0.25 moderately, above 0.25 a lot. It measures calibration, not ranking: "
        "models trained apart differ even when they rank payments alike, and each decides "
        "at its own threshold (the flip rate counts changed decisions). The `shadow:` "
        "policy's `max_score_psi` bounds it where something downstream reads raw scores.",
        "",
    ]
    if report.reasons:
        lines += ["Held because:", *[f"- {reason}" for reason in report.reasons]]
    else:
        lines.append("Every condition of the `shadow:` policy holds: promote.")
    return "\n".join(lines) + "\n"
