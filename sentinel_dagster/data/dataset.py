"""Reading, schema-checking and writing transactions Parquet files (simulated or your own).

The schema check is ours rather than Great Expectations': GX 1.x's type-list expectation
does not recognise pandas 3's string dtype or timezone-aware timestamps (it reports
`datetime64[us, UTC]` as not a timestamp), so it cannot say "this column is mistyped".
"""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from sentinel_dagster.core.paths import missing_file
from serving.events import ALL_COLUMNS, REQUIRED_COLUMNS, ColumnKind


class DatasetError(Exception):
    """The file is missing or is not a readable Parquet file."""


class SchemaError(ValueError):
    """Required columns are missing or columns have the wrong type; names each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_parquet(path: Path) -> pd.DataFrame:
    path = Path(path)
    problem = missing_file(path)
    if problem is not None:
        raise DatasetError(problem)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"not a readable Parquet file: {path} ({exc})") from None
    return table.to_pandas()


def _kind_matches(series: pd.Series, kind: ColumnKind) -> bool:
    dtype = series.dtype
    if kind is ColumnKind.TIMESTAMP:
        return ptypes.is_datetime64_any_dtype(dtype)
    if kind is ColumnKind.FLOAT:
        return ptypes.is_numeric_dtype(dtype) and not ptypes.is_bool_dtype(dtype)
    if kind is ColumnKind.FLAG:  # 0/1 as integers, booleans or floats; values checked by GX
        return ptypes.is_numeric_dtype(dtype)
    if ptypes.is_string_dtype(dtype):
        return True
    # An all-null optional column (e.g. no device ids at all) is read as object or null.
    return bool(series.isna().all())


def schema_problems(frame: pd.DataFrame) -> list[str]:
    """One message per missing required column and per present column of the wrong type."""
    problems = [f"missing column '{name}'" for name in REQUIRED_COLUMNS if name not in frame]
    for name, kind in ALL_COLUMNS.items():
        if name in frame and not _kind_matches(frame[name], kind):
            problems.append(f"column '{name}' has type {frame[name].dtype}, expected {kind}")
    return problems


def check_schema(frame: pd.DataFrame) -> None:
    problems = schema_problems(frame)
    if problems:
        raise SchemaError(problems)


def _utc(series: pd.Series) -> pd.Series:
    # Timestamps without a zone are taken as UTC (the contract's zone).
    if getattr(series.dt, "tz", None) is None:
        return series.dt.tz_localize("UTC")
    return series.dt.tz_convert("UTC")


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes for a frame that passed `check_schema`: UTC timestamps, float amounts."""
    out = frame.copy()
    for name, kind in ALL_COLUMNS.items():
        if name not in out:
            continue
        if kind is ColumnKind.TIMESTAMP:
            out[name] = _utc(out[name])
        elif kind is ColumnKind.FLOAT:
            out[name] = out[name].astype("float64")
        elif kind is ColumnKind.FLAG and out[name].notna().all():
            out[name] = out[name].astype("int8")
    return out


def load_transactions(path: Path) -> pd.DataFrame:
    """A user's or the simulator's Parquet, schema-checked and normalized."""
    frame = read_parquet(path)
    check_schema(frame)
    return normalize(frame)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically with fixed settings, so equal tables give equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=256 * 1024)
    tmp.replace(path)


def write_parquet_frame(frame: pd.DataFrame, path: Path) -> None:
    write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path)
