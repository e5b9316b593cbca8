"""The promotion gate: a candidate's holdout metrics judged against the policy.

A failed gate is a normal outcome, returned with every reason — never an exception.
"""

from dataclasses import dataclass, field

from sentinel_dagster.policy import PromotionPolicy


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


def decide(
    candidate: dict[str, float],
    policy: PromotionPolicy,
    champion: dict[str, float] | None = None,
    predict_p99_us: float | None = None,
) -> Decision:
    """Floors, then no regression against `champion` (same holdout), then latency."""
    checks = []
    for metric, floor in policy.metric_floors.items():
        value = candidate.get(metric)
        if value is None:
            checks.append(GateCheck(f"floor:{metric}", False, f"{metric} was not measured"))
        else:
            checks.append(
                GateCheck(
                    f"floor:{metric}", value >= floor, f"{metric} {value:.4f} vs floor {floor}"
                )
            )
    if champion is None:
        checks.append(GateCheck("champion", True, "no champion yet: nothing to regress against"))
    else:
        for metric, tolerance in policy.max_regression.items():
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
