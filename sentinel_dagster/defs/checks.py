"""Blocking asset checks: nothing downstream runs on bad data or bad features.

On `transactions` the Great Expectations suite runs once and each group of expectations is
reported as its own check, so the UI shows which aspect of the data failed.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from sentinel_dagster.core import paths
from sentinel_dagster.data.validation import (
    CHECK_DESCRIPTIONS,
    CHECKS,
    outcomes_markdown,
    validate_transactions,
)
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.features.feature_checks import leakage_probe, sanity_outcomes


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name, asset="transactions", blocking=True, description=CHECK_DESCRIPTIONS[name]
        )
        for name in CHECKS
    ],
    ins={"transactions": dg.AssetIn("transactions")},
)
def transactions_expectations(
    context: dg.AssetCheckExecutionContext,
    transactions: pd.DataFrame,
    sentinel_home: SentinelHome,
    policy: GovernancePolicy,
) -> Iterator[dg.AssetCheckResult]:
    report = validate_transactions(
        transactions,
        policy.load().data,
        docs_dir=sentinel_home.data_docs_dir(),
        run_name=context.run.run_id,  # the Data Docs page of this very run
    )
    # Refused data must not stay the current `transactions`: nothing downstream may read it.
    refused = quarantine(sentinel_home.root(), context.run.run_id) if report.failures else None
    for name in CHECKS:
        outcomes = report.for_check(name)
        failed = [o for o in outcomes if not o.success]
        metadata: dict[str, Any] = {
            "expectations": len(outcomes),
            "failed": len(failed),
            "outcomes": dg.MetadataValue.md(outcomes_markdown(outcomes) if outcomes else "n/a"),
        }
        if report.data_docs is not None:
            metadata["data_docs"] = dg.MetadataValue.path(str(report.data_docs))
        if failed:
            examples = [f"{o.column}: {e}" for o in failed for e in o.examples]
            metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in examples) or "-")
            metadata["failures"] = dg.MetadataValue.json(
                [
                    {"expectation": o.expectation, "column": o.column, "observed": o.observed,
                     "examples": o.examples}
                    for o in failed
                ]
            )  # fmt: skip
            if refused is not None:
                metadata["refused_data"] = dg.MetadataValue.path(str(refused))
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key="transactions",
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=None if outcomes else "not applicable: the data has no such columns",
        )


def quarantine(home: Path, run_id: str) -> Path | None:
    """Move the stored `transactions` a blocking check refused to `assets/refused/<run>/`;
    reading the asset then fails saying so (resources.ParquetIOManager)."""
    stored = paths.asset_path(home, "transactions")
    if not stored.exists():
        return None
    target = paths.refused_path(home, run_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    stored.replace(target)
    return target


@dg.asset_check(
    asset="transaction_features",
    blocking=True,
    description="no infinities, counts >= 0, rates in [0, 1], no label from the future",
    additional_ins={"transactions": dg.AssetIn("transactions")},
)
def transaction_features_valid(
    transaction_features: pd.DataFrame, transactions: pd.DataFrame, policy: GovernancePolicy
) -> dg.AssetCheckResult:
    outcomes = [*sanity_outcomes(transaction_features)]
    outcomes.append(leakage_probe(transactions, transaction_features, policy.feature_set()))
    failed = [o for o in outcomes if not o.passed]
    rows = ["| check | result | detail |", "|---|---|---|"]
    rows += [f"| {o.name} | {'pass' if o.passed else '**FAIL**'} | {o.detail} |" for o in outcomes]
    examples = [e for o in failed for e in o.examples]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "outcomes": dg.MetadataValue.md("\n".join(rows)),
            "failed": len(failed),
            "examples": dg.MetadataValue.md("\n".join(f"- {e}" for e in examples) or "-"),
        },
    )
