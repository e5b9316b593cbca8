"""The promotion gate: a candidate's holdout metrics judged against the policy.

The default checks are relative (against the heuristic fallback and the champion, scored on
the same holdout), so the gate judges the model rather than how hard the data is; absolute
floors apply only where a deployment configures them.

A failed gate is a normal outcome, returned with every reason — never an exception.
"""

from dataclasses import dataclass, field
from typing import Any

from sentinel_dagster.core.policy import PromotionPolicy
from serving.profiles import FULL


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why it failed (empty when it passed)."""
        return [c.detail for c in self.checks if not c.passed]

    def markdown(self) -> str:
        rows = ["| check | result | detail |", "|---|---|---|"]
        rows += [
            f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in self.checks
        ]
        return "\n".join(rows)

    def refusal(self) -> list[str]:
        """Every reason as one block of lines (empty when it passed), for terminals."""
        if self.passed:
            return []
        head = f"promotion gate refused ({len(self.reasons)} of {len(self.checks)} checks failed):"
        return [head, *(f"  - {reason}" for reason in self.reasons)]


def decide(
    candidate: dict[str, float],
    policy: PromotionPolicy,
    champion: dict[str, float] | None = None,
    heuristic: dict[str, float] | None = None,
    predict_p99_us: float | None = None,
    champion_incomparable: str | None = None,
) -> Decision:
    """Uplift over `heuristic` and no regression against `champion` (both scored on the
    candidate's holdout), optional absolute floors, then latency.

    `champion_incomparable` says why a champion exists but cannot be scored on this holdout
    (another feature set): the candidate is then judged against the heuristic only.
    """
    if champion_incomparable is not None:
        regression = [
            GateCheck(
                "champion",
                True,
                f"the champion cannot be scored on this holdout ({champion_incomparable}): "
                "judged against the heuristic only",
            )
        ]
    else:
        regression = _regression(candidate, champion, policy.max_regression)
    checks = [
        *_uplift(candidate, heuristic, policy.min_uplift_over_heuristic),
        *regression,
        *_floors(candidate, policy.metric_floors),
    ]
    if predict_p99_us is not None:
        budget = policy.max_predict_p99_us
        checks.append(
            GateCheck(
                "latency",
                predict_p99_us <= budget,
                f"single-row predict p99 {predict_p99_us:.1f} us vs budget {budget:g} us",
            )
        )
    return Decision(passed=all(c.passed for c in checks), checks=checks)


def _uplift(
    candidate: dict[str, float], heuristic: dict[str, float] | None, margins: dict[str, float]
) -> list[GateCheck]:
    checks = []
    for metric, margin in margins.items():
        name, new = f"uplift:{metric}", candidate.get(metric)
        old = heuristic.get(metric) if heuristic is not None else None
        if new is None:
            checks.append(GateCheck(name, False, f"{metric} was not measured"))
        elif old is None:  # fail closed: without the baseline the uplift is unknown
            checks.append(
                GateCheck(name, False, f"heuristic {metric} missing: cannot judge the uplift")
            )
        else:
            checks.append(
                GateCheck(
                    name,
                    new - old >= margin,
                    f"{metric} {new:.4f} vs heuristic {old:.4f}: uplift {new - old:+.4f}, "
                    f"needs at least {margin:+g}",
                )
            )
    return checks


def _regression(
    candidate: dict[str, float], champion: dict[str, float] | None, tolerances: dict[str, float]
) -> list[GateCheck]:
    if champion is None:
        return [GateCheck("champion", True, "no champion yet: nothing to regress against")]
    checks = []
    for metric, tolerance in tolerances.items():
        new, old = candidate.get(metric), champion.get(metric)
        if new is None or old is None:
            checks.append(GateCheck(f"regression:{metric}", False, f"{metric} missing"))
            continue
        checks.append(
            GateCheck(
                f"regression:{metric}",
                new >= old - tolerance,
                f"{metric} {new:.4f} vs champion {old:.4f} (tolerance {tolerance})",
            )
        )
    return checks


def _floors(candidate: dict[str, float], floors: dict[str, float]) -> list[GateCheck]:
    checks = []
    for metric, floor in floors.items():
        value = candidate.get(metric)
        if value is None:
            checks.append(GateCheck(f"floor:{metric}", False, f"{metric} was not measured"))
        else:
            checks.append(
                GateCheck(
                    f"floor:{metric}", value >= floor, f"{metric} {value:.4f} vs floor {floor}"
                )
            )
    return checks


@dataclass(frozen=True)
class BundleDecision:
    """The gate for every model of a candidate bundle: the full model and each request
    profile's. The bundle passes only if every model does: a regression for one kind of
    caller is not paid for by a gain for another."""

    decisions: dict[str, Decision]  # by model: "full" and each profile

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.decisions.values())

    @property
    def reasons(self) -> list[str]:
        """Why it failed; a profile model's reasons start with its name."""
        return [
            reason if name == FULL else f"{name}: {reason}"
            for name, d in self.decisions.items()
            for reason in d.reasons
        ]

    @property
    def checks(self) -> list[GateCheck]:
        return [c for d in self.decisions.values() for c in d.checks]

    def markdown(self) -> str:
        rows = ["| model | check | result | detail |", "|---|---|---|---|"]
        rows += [
            f"| {name} | {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |"
            for name, d in self.decisions.items()
            for c in d.checks
        ]
        return "\n".join(rows)

    def refusal(self) -> list[str]:
        if self.passed:
            return []
        failed, total = len(self.reasons), len(self.checks)
        head = f"promotion gate refused ({failed} of {total} checks failed):"
        return [head, *(f"  - {reason}" for reason in self.reasons)]


def decide_bundle(
    evaluations: dict[str, dict[str, Any]],
    policy: PromotionPolicy,
    champion: dict[str, dict[str, float] | None] | None = None,
    champion_incomparable: str | None = None,
) -> BundleDecision:
    """`decide` for each model of `evaluations` (name -> its `metrics`, `heuristic_metrics`
    and `predict_p99_us`), each against the champion's model of the same name (`champion`:
    each of its models' metrics on this holdout, None for one this holdout cannot score;
    `champion` None: no champion yet). A model the champion does not have is judged against
    the heuristic only, and the check says so. A model the champion has and the candidate
    lacks fails the `coverage` check: its callers would lose it (unless the policy's
    `allow_missing_models` names it)."""
    decisions = {}
    for name, evaluation in evaluations.items():
        why = champion_incomparable
        old = None if champion is None else champion.get(name)
        if why is None and champion is not None and old is None:
            why = (
                f"its {name} model cannot be scored on this holdout"
                if name in champion
                else f"it has no {name} model"
            )
        decisions[name] = decide(
            evaluation["metrics"],
            policy,
            champion=old,
            heuristic=evaluation.get("heuristic_metrics"),
            predict_p99_us=evaluation.get("predict_p99_us"),
            champion_incomparable=why,
        )
    for name in champion or {}:
        if name not in evaluations:
            allowed = name in policy.allow_missing_models
            outcome = "allowed by allow_missing_models" if allowed else "they would lose it"
            detail = (
                f"the champion answers {name} requests with its own model and this candidate "
                f"has none: {outcome}"
            )
            decisions[name] = Decision(allowed, [GateCheck("coverage", allowed, detail)])
    return BundleDecision(decisions)
