"""Validation: one fixture per kind of bad input, each caught with the right message."""

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from sentinel_dagster.core.policy import DataPolicy, PolicyError, RateBounds, load_policy
from sentinel_dagster.data.dataset import (
    DatasetError,
    SchemaError,
    load_transactions,
    normalize,
    read_parquet,
)
from sentinel_dagster.data.validation import ValidationReport, validate_transactions


@pytest.fixture(scope="module")
def good(small_frame: pd.DataFrame) -> pd.DataFrame:
    return small_frame.head(3_000).copy()


POLICY = DataPolicy(fraud_rate=RateBounds(min=0.0, max=0.2))


def _validate(frame: pd.DataFrame, policy: DataPolicy = POLICY) -> ValidationReport:
    return validate_transactions(normalize(frame), policy)


def _failed(report: ValidationReport) -> dict[tuple[str, str, str | None], str]:
    return {(o.check, o.expectation, o.column): o.observed for o in report.failures}


def test_good_data_passes_every_expectation(good: pd.DataFrame) -> None:
    report = _validate(good)
    assert report.success, report.failures
    assert len(report.outcomes) >= 15
    assert {o.check for o in report.outcomes} == {
        "schema", "keys", "amount", "event_time", "labels", "fraud_rate", "optional_fields"
    }  # fmt: skip


def _set(column: str, row: int, value: object) -> Callable[[pd.DataFrame], None]:
    def change(frame: pd.DataFrame) -> None:
        frame.loc[frame.index[row], column] = value

    return change


def _duplicate_id(frame: pd.DataFrame) -> None:
    frame.loc[frame.index[5], "transaction_id"] = frame["transaction_id"].iloc[6]


def _label_before_event(frame: pd.DataFrame) -> None:
    row = frame.index[9]
    frame.loc[row, "label_time"] = frame.loc[row, "event_time"] - pd.Timedelta(hours=1)


NOT_NULL = "expect_column_values_to_not_be_null"
UNIQUE = "expect_column_values_to_be_unique"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
A_AFTER_B = "expect_column_pair_values_a_to_be_greater_than_b"
FUTURE = pd.Timestamp("2099-01-01", tz="UTC")
ANCIENT = pd.Timestamp("1999-01-01", tz="UTC")


@pytest.mark.parametrize(
    ("change", "check", "expectation", "column", "example"),
    [
        (_set("card_id", 8, None), "keys", NOT_NULL, "card_id", "tx000000008"),
        (_set("transaction_id", 4, None), "keys", NOT_NULL, "transaction_id", None),
        (_duplicate_id, "keys", UNIQUE, "transaction_id", "tx000000006"),
        (_set("amount", 3, -1.0), "amount", BETWEEN, "amount", "amount=-1.0"),
        (_set("amount", 3, 1e7), "amount", BETWEEN, "amount", "tx000000003"),
        (_set("event_time", 7, FUTURE), "event_time", BETWEEN, "event_time", "tx000000007"),
        (_set("event_time", 7, ANCIENT), "event_time", BETWEEN, "event_time", "1999-01-01"),
        (_label_before_event, "labels", A_AFTER_B, "label_time", "tx000000009"),
        (_set("is_fraud", 2, 7), "labels", IN_SET, "is_fraud", "is_fraud=7"),
        (_set("channel", 2, "phone"), "optional_fields", IN_SET, "channel", "phone"),
        (_set("lat", 2, 123.0), "optional_fields", BETWEEN, "lat", "123.0"),
    ],
)
def test_each_bad_value_is_caught_with_an_example_row(
    good: pd.DataFrame,
    change: Callable[[pd.DataFrame], None],
    check: str,
    expectation: str,
    column: str,
    example: str | None,
) -> None:
    bad = good.copy()
    change(bad)
    report = _validate(bad)
    assert not report.success
    failed = report.failures
    assert [(o.check, o.expectation, o.column) for o in failed] == [(check, expectation, column)]
    # One bad row (two for a duplicated id), out of 3,000.
    assert re.match(r"[12] of 3,000 rows unexpected", failed[0].observed), failed[0].observed
    if example:
        assert any(example in e for e in failed[0].examples), failed[0].examples


def test_fraud_rate_outside_policy_bounds_fails(good: pd.DataFrame) -> None:
    strict = DataPolicy(fraud_rate=RateBounds(min=0.5, max=0.6))
    failed = _failed(_validate(good, strict))
    assert list(failed) == [("fraud_rate", "expect_column_mean_to_be_between", "is_fraud")]


def test_missing_columns_are_named_and_their_value_checks_skipped(good: pd.DataFrame) -> None:
    report = validate_transactions(good.drop(columns=["merchant_id", "amount"]), POLICY)
    failed = report.failures
    assert [(o.check, o.expectation) for o in failed] == [
        ("schema", "expect_table_columns_to_match_set")
    ]
    assert failed[0].observed == "missing columns: amount, merchant_id"
    assert not report.for_check("amount")  # nothing to check without the column


def test_wrong_dtype_is_named_and_its_value_checks_skipped(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad["amount"] = bad["amount"].astype(str)
    bad["event_time"] = bad["event_time"].astype(str)
    report = validate_transactions(bad, POLICY)
    observed = [o.observed for o in report.failures]
    assert observed == [
        "column 'event_time' has type str, expected timestamp",
        "column 'amount' has type str, expected float",
    ]
    assert not report.for_check("amount")
    assert not report.for_check("event_time")


def test_zero_rows_fail_the_row_count(good: pd.DataFrame) -> None:
    failed = _failed(_validate(good.head(0)))
    assert ("schema", "expect_table_row_count_to_be_between", None) in failed


def test_unlabelled_data_is_valid_without_label_checks(good: pd.DataFrame) -> None:
    report = _validate(good.drop(columns=["is_fraud", "label_time", "fraud_scenario"]))
    assert report.success
    assert not report.for_check("fraud_rate")


def test_data_docs_are_built_and_point_at_this_run(good: pd.DataFrame, tmp_path: Path) -> None:
    report = validate_transactions(normalize(good), POLICY, docs_dir=tmp_path / "docs")
    assert report.data_docs is not None
    assert report.data_docs.is_file()
    assert report.data_docs.is_relative_to(tmp_path / "docs")
    page = report.data_docs.read_text()
    assert "transaction_id" in page
    assert "unique." in page  # the rendered uniqueness expectation
    assert (tmp_path / "docs" / "index.html").is_file()
    assert "Data asset: transactions" in page and "__none__" not in str(report.data_docs)


def test_data_docs_pages_load_nothing_from_the_internet(good: pd.DataFrame, tmp_path: Path) -> None:
    import re

    from sentinel_dagster.data import data_docs

    assert data_docs.available(), "vendor/data_docs/node_modules: run `make setup` with npm"
    docs = tmp_path / "docs"
    report = validate_transactions(normalize(good), POLICY, docs_dir=docs)
    assert report.data_docs is not None
    pages = [report.data_docs, docs / "index.html", docs / "expectations" / "transactions.html"]
    for page in pages:
        html = page.read_text()
        assert "http://" not in html and "https://" not in html, page
        loaded = re.findall(r'<(?:script|link)\b[^>]*(?:src|href)="([^"]+)"', html)
        assert any(link.endswith("bootstrap.min.css") for link in loaded), page
        for link in loaded:  # every script and style it loads is in the site
            assert (page.parent / link).resolve().is_file(), (page, link)
    fonts = docs / "static" / "vendor" / "@fortawesome" / "fontawesome-free" / "webfonts"
    assert any(fonts.glob("*.woff2"))  # what the icon stylesheet loads relative to itself


def test_data_docs_keep_every_run_page_under_its_names(good: pd.DataFrame, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    pipeline = validate_transactions(normalize(good), POLICY, docs_dir=docs, run_name="run-1")
    other = validate_transactions(
        normalize(good).head(5), POLICY, docs_dir=docs, data_asset="mine.parquet"
    )
    assert pipeline.data_docs is not None and other.data_docs is not None
    # A later validation of something else leaves the pipeline's page (and its link) alone.
    assert pipeline.data_docs.is_file() and other.data_docs.is_file()
    assert pipeline.data_docs != other.data_docs
    assert "/run-1/" in str(pipeline.data_docs) and "/sentinel-validate/" in str(other.data_docs)
    assert "Data asset: transactions" in pipeline.data_docs.read_text()
    assert "Data asset: mine.parquet" in other.data_docs.read_text()


def test_bring_your_own_data_with_required_columns_only(tmp_path: Path) -> None:
    path = tmp_path / "mine.parquet"
    pd.DataFrame(
        {
            "transaction_id": ["a", "b"],
            "event_time": pd.to_datetime(["2026-03-01 10:00", "2026-03-01 10:05"]),  # naive
            "card_id": ["c1", "c1"],
            "merchant_id": ["m1", "m2"],
            "amount": [10, 25],  # integers are fine
        }
    ).to_parquet(path)
    frame = load_transactions(path)
    assert str(frame["event_time"].dt.tz) == "UTC"
    assert frame["amount"].dtype == "float64"
    assert validate_transactions(frame, POLICY).success


def test_schema_error_names_every_bad_column(tmp_path: Path, good: pd.DataFrame) -> None:
    path = tmp_path / "bad.parquet"
    bad = good.drop(columns=["card_id"])
    bad["amount"] = bad["amount"].astype(str)
    bad.to_parquet(path)
    with pytest.raises(SchemaError) as caught:
        load_transactions(path)
    assert str(caught.value) == (
        "missing column 'card_id'; column 'amount' has type str, expected float"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a readable Parquet file"), (b"id,amount\n1,2\n", "not a readable Parquet file")],
)
def test_unreadable_files_raise_dataset_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_parquet(path)


def test_missing_file_raises_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        read_parquet(tmp_path / "nope.parquet")


def test_repository_policy_loads() -> None:
    policy = load_policy()
    assert policy.data.max_amount > 0
    assert policy.data.fraud_rate.min < policy.data.fraud_rate.max


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  fraud_rate: {min: 0.5, max: 0.1}\n", "data.fraud_rate"),
        ("data:\n  max_amount: -3\n", "data.max_amount"),
        ("data:\n  surprise: 1\n", "data.surprise"),
        ("data: [1, 2\n", "not readable YAML"),
    ],
)
def test_invalid_policy_is_rejected_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_the_share_of_bad_rows_has_the_same_base_as_the_count(good: pd.DataFrame) -> None:
    """GX's own percentage counts non-null rows only: with nulls in the column it said
    "3 of 113,698 rows (0.3%)". The share is now of all rows, and says so."""
    bad = good.copy()
    bad["lat"] = None  # 3,000 rows, 2,000 of them null below
    bad.loc[:1_000, "lat"] = 10.0
    bad.loc[:1, "lat"] = 95.0  # two out of range
    (observed,) = [o.observed for o in _validate(bad).failures if o.column == "lat"]
    assert observed == "2 of 3,000 rows unexpected (0.0667% of all rows)"
