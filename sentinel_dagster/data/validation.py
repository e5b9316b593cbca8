"""The Great Expectations suite for transactions, shared by the Dagster checks and the CLI.

Expectations are grouped into named checks (schema, keys, amount, ...). Each Dagster asset
check reports one group; `sentinel validate` prints every failed expectation.
Column types are judged by `dataset.schema_problems` (see that module for why) and reported
as part of the `schema` group; value expectations on a missing or mistyped column are
skipped, because they could only fail with a less helpful message.

Data Docs keep their history: the validation results are stored on disk beside the site
(`<docs>/../gx_validation_results`), so each run's page stays, and a link printed earlier
keeps working (GX's site builder deletes the pages of results its store no longer holds).
Pages name the data asset (`transactions`, or the validated file) and the run (the Dagster
run id, or `sentinel-validate`).
"""

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
)

from sentinel_dagster.core.policy import DataPolicy
from sentinel_dagster.data import data_docs
from sentinel_dagster.data.dataset import schema_problems
from serving.events import ALL_COLUMNS, CHANNELS, KEY_COLUMNS, REQUIRED_COLUMNS

CHECKS: tuple[str, ...] = (
    "schema",
    "keys",
    "amount",
    "event_time",
    "labels",
    "fraud_rate",
    "optional_fields",
)
CHECK_DESCRIPTIONS: dict[str, str] = {
    "schema": "required columns present with the right types; at least the minimum rows",
    "keys": "keys never null; transaction_id unique",
    "amount": "amount between 0 and the policy cap",
    "event_time": "event_time inside the policy range and not in the future",
    "labels": "is_fraud in {0, 1}; label_time not before event_time",
    "fraud_rate": "fraud rate inside the policy bounds",
    "optional_fields": "channel is pos/online/atm; lat and lon are coordinates",
}
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ExpectationOutcome:
    check: str  # one of CHECKS
    expectation: str  # e.g. expect_column_values_to_be_unique
    column: str | None
    success: bool
    observed: str  # short human-readable observation
    examples: list[str] = field(default_factory=list)  # offending rows or values


@dataclass(frozen=True)
class ValidationReport:
    rows: int
    outcomes: list[ExpectationOutcome]
    data_docs: Path | None = None  # the GX Data Docs page of this run

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def for_check(self, check: str) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.check == check]


def _usable_columns(frame: pd.DataFrame, problems: list[str]) -> set[str]:
    mistyped = {name for name in frame.columns if any(f"'{name}'" in p for p in problems)}
    return {name for name in frame.columns if name in ALL_COLUMNS} - mistyped


def build_expectations(
    usable: set[str], policy: DataPolicy, now: dt.datetime
) -> list[tuple[str, gx.expectations.Expectation]]:
    """(check, expectation) pairs for the columns that can be checked."""
    E = gx.expectations
    pairs: list[tuple[str, gx.expectations.Expectation]] = []

    def add(check: str, expectation: gx.expectations.Expectation) -> None:
        pairs.append((check, expectation))

    add(
        "schema",
        E.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False),
    )
    add("schema", E.ExpectTableRowCountToBeBetween(min_value=policy.min_rows))
    for column in KEY_COLUMNS:
        if column in usable:
            add("keys", E.ExpectColumnValuesToNotBeNull(column=column))
    if "transaction_id" in usable:
        add("keys", E.ExpectColumnValuesToBeUnique(column="transaction_id"))
    if "amount" in usable:
        add(
            "amount",
            E.ExpectColumnValuesToBeBetween(
                column="amount", min_value=0.0, max_value=policy.max_amount
            ),
        )
    if "event_time" in usable:
        earliest, latest = (pd.Timestamp(t) for t in policy.event_time_bounds(now))
        add(
            "event_time",
            E.ExpectColumnValuesToBeBetween(
                column="event_time", min_value=earliest, max_value=latest
            ),
        )
    if "is_fraud" in usable:
        add("labels", E.ExpectColumnValuesToNotBeNull(column="is_fraud"))
        add("labels", E.ExpectColumnValuesToBeInSet(column="is_fraud", value_set=[0, 1]))
        rate = policy.fraud_rate
        add(
            "fraud_rate",
            E.ExpectColumnMeanToBeBetween(
                column="is_fraud", min_value=rate.min, max_value=rate.max
            ),
        )
    if {"label_time", "event_time"} <= usable:
        add(
            "labels",
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="label_time",
                column_B="event_time",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
        )
    if "channel" in usable:
        add(
            "optional_fields",
            E.ExpectColumnValuesToBeInSet(column="channel", value_set=list(CHANNELS)),
        )
    for column, bound in (("lat", 90.0), ("lon", 180.0)):
        if column in usable:
            add(
                "optional_fields",
                E.ExpectColumnValuesToBeBetween(column=column, min_value=-bound, max_value=bound),
            )
    return pairs


def results_dir(docs_dir: Path) -> Path:
    """Where the validation results behind a Data Docs site are kept."""
    return docs_dir.parent / "gx_validation_results"


def _context(docs_dir: Path | None) -> Any:
    sites = {}
    if docs_dir is not None:
        sites["sentinel"] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {
                "class_name": "DefaultSiteIndexBuilder",
                "show_how_to_buttons": False,  # links to GX's website, not to this data
            },
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    if docs_dir is not None:  # results on disk: the site keeps every run's page
        store = config.stores[config.validation_results_store_name]
        store["store_backend"] = {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(results_dir(docs_dir)),
        }
    return gx.get_context(mode="ephemeral", project_config=config)


def _observed(result: dict[str, Any], exception_message: str | None) -> str:
    if exception_message:
        return exception_message
    if "observed_value" in result:
        return str(result["observed_value"])
    if "unexpected_count" in result:
        # GX's unexpected_percent counts non-null rows only; the count here is of all rows,
        # so the share is computed on the same base.
        bad, rows = result["unexpected_count"], result.get("element_count") or 0
        share = 100.0 * bad / rows if rows else 0.0
        return f"{bad:,} of {rows:,} rows unexpected ({share:.3g}% of all rows)"
    return "no observation"


def _examples(result: dict[str, Any]) -> list[str]:
    rows = result.get("partial_unexpected_index_list") or []
    if rows:  # by the index columns asked for, else row numbers
        return [
            " ".join(f"{k}={v}" for k, v in row.items()) if isinstance(row, dict) else f"row {row}"
            for row in rows[:MAX_EXAMPLES]
        ]
    return [repr(v) for v in (result.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]


def _exception_message(info: dict[str, Any]) -> str | None:
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for nested in info.values():  # keyed by metric when a metric failed to compute
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return str(nested.get("exception_message"))
    return None


def validate_transactions(
    frame: pd.DataFrame,
    policy: DataPolicy,
    docs_dir: Path | None = None,
    now: dt.datetime | None = None,
    data_asset: str = "transactions",
    run_name: str = "sentinel-validate",
) -> ValidationReport:
    """Run the suite on `frame`; build GX Data Docs under `docs_dir` when given, the page
    naming `data_asset` (what was validated) and `run_name` (the run that validated it)."""
    now = now or dt.datetime.now(dt.UTC)
    problems = schema_problems(frame)
    usable = _usable_columns(frame, problems)
    pairs = build_expectations(usable, policy, now)
    index = ["transaction_id"] if "transaction_id" in usable else []
    missing = sorted(set(REQUIRED_COLUMNS) - set(frame.columns))
    return run_suite(
        frame, "transactions", pairs, problems, missing, CHECKS, docs_dir, index,
        data_asset=data_asset, run_name=run_name,
    )  # fmt: skip


def run_suite(
    frame: pd.DataFrame,
    name: str,
    pairs: list[tuple[str, gx.expectations.Expectation]],
    problems: list[str],
    missing: list[str],
    checks: tuple[str, ...],
    docs_dir: Path | None = None,
    index_columns: list[str] | None = None,
    data_asset: str | None = None,
    run_name: str = "sentinel-validate",
) -> ValidationReport:
    """Run (check, expectation) `pairs` on `frame` as the GX suite `name`; `problems` are
    type problems found beforehand ("column 'x' has type ..."), `missing` the required
    columns absent; outcomes are ordered as `checks`. Data Docs (under `docs_dir`) name
    `data_asset` (default: `name`) and `run_name`."""
    context = _context(docs_dir)
    batch = (
        context.data_sources.add_pandas("sentinel")
        .add_dataframe_asset(data_asset or name)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    check_of: dict[str, str] = {}
    for check, expectation in pairs:
        added = suite.add_expectation(expectation)
        check_of[str(added.id)] = check
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": MAX_EXAMPLES,
    }
    if index_columns:
        result_format["unexpected_index_column_names"] = index_columns
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=name, validation_definitions=[definition], result_format=result_format)
    )
    run = checkpoint.run(
        batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
    )
    (identifier, suite_result), *_ = run.run_results.items()
    docs_page = None
    if docs_dir is not None:
        # GX reads a page's "Data asset" from the batch spec, which an in-memory frame's
        # lacks: named here, then stored (on disk) and rendered.
        suite_result.meta.setdefault("batch_spec", {})["data_asset_name"] = data_asset or name
        context.validation_results_store.set(identifier, suite_result)
        suite_page = ExpectationSuiteIdentifier(name=name)
        context.build_data_docs(resource_identifiers=[identifier, suite_page])
        url = context.get_docs_sites_urls(resource_identifier=identifier)[0]["site_url"]
        docs_page = Path(url.removeprefix("file://"))
        suite_url = context.get_docs_sites_urls(resource_identifier=suite_page)[0]["site_url"]
        pages = [docs_dir / "index.html", Path(suite_url.removeprefix("file://")), docs_page]
        data_docs.localize(docs_dir, pages)  # served from the site, not CDNs

    outcomes = [
        ExpectationOutcome("schema", "column_type", p.split("'")[1], False, p)
        for p in problems
        if p.startswith("column ")
    ]
    for r in suite_result.results:
        config = r.expectation_config
        kwargs = config.kwargs
        observed = _observed(r.result, _exception_message(r.exception_info))
        if config.type == "expect_table_columns_to_match_set" and missing:
            observed = f"missing columns: {', '.join(missing)}"
        outcomes.append(
            ExpectationOutcome(
                check=check_of[str(config.id)],
                expectation=config.type,
                column=kwargs.get("column") or kwargs.get("column_A"),
                success=bool(r.success),
                observed=observed,
                examples=_examples(r.result),
            )
        )
    outcomes.sort(key=lambda o: checks.index(o.check))
    return ValidationReport(rows=len(frame), outcomes=outcomes, data_docs=docs_page)


def outcomes_markdown(outcomes: list[ExpectationOutcome]) -> str:
    """A Markdown table of outcomes, for Dagster metadata."""
    lines = ["| expectation | column | result | observed |", "|---|---|---|---|"]
    for o in outcomes:
        mark = "pass" if o.success else "**FAIL**"
        observed = o.observed.replace("|", "\\|")[:200]
        lines.append(f"| {o.expectation} | {o.column or ''} | {mark} | {observed} |")
    return "\n".join(lines)
