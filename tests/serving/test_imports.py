"""DESIGN.md §2: the online runtime never imports the pipeline's heavy libraries."""

import subprocess
import sys

FORBIDDEN = ("dagster", "mlflow", "great_expectations", "xgboost", "pandas", "sentinel_dagster")


def test_the_service_imports_none_of_the_pipeline_libraries() -> None:
    code = (
        "import sys, serving.app, serving.hot_routes, serving.scoring\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"serving imported: {result.stdout.strip()}"
