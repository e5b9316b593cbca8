"""Where every benchmark keeps its raw figures: `$SENTINEL_HOME/bench/<name>.json`."""

import json
from pathlib import Path
from typing import Any

from sentinel_dagster.core import paths


def save_results(name: str, results: Any) -> Path:
    out = paths.sentinel_home() / "bench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out
