"""Where local state lives: everything under SENTINEL_HOME (default ./var)."""

import os
from pathlib import Path

DEFAULT_HOME = "var"


def sentinel_home(override: str | Path | None = None) -> Path:
    """The state root: `override`, else $SENTINEL_HOME, else ./var; read at call time."""
    chosen = override or os.environ.get("SENTINEL_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def dagster_home(home: Path) -> Path:
    return home / "dagster"


def log_path(home: Path, process: str) -> Path:
    """Where `sentinel up` writes a child's output (`dagster`, `service`)."""
    return home / "logs" / f"{process}.log"


def asset_path(home: Path, asset_name: str) -> Path:
    return home / "assets" / f"{asset_name}.parquet"


def refused_path(home: Path, run_id: str, asset_name: str = "transactions") -> Path:
    """Where data a blocking check refused is kept, out of the downstream assets' reach."""
    return home / "assets" / "refused" / run_id / f"{asset_name}.parquet"


def data_docs_dir(home: Path) -> Path:
    return home / "data_docs"


def default_simulation_path(home: Path) -> Path:
    return home / "data" / "transactions.parquet"


def missing_file(path: Path) -> str | None:
    """Why `path` cannot be a data file (missing, a directory), or None. Cheap, so that the
    command line says it before importing the data libraries."""
    path = Path(path)
    if not path.exists():
        return f"file not found: {path}"
    if path.is_dir():
        return f"expected a Parquet file, got a directory: {path}"
    return None


def drift_summary_path(home: Path) -> Path:
    """The drift watch's latest result, which the scoring service exports to Prometheus
    (serving/drift_metrics.py reads the same path)."""
    return home / "monitoring" / "drift.json"
