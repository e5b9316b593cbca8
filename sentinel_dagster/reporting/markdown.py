"""Small Markdown renderers for Dagster metadata (no `tabulate` dependency needed)."""

from typing import Any

import pandas as pd


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def frame_markdown(frame: pd.DataFrame, max_rows: int = 20) -> str:
    head = frame.head(max_rows)
    lines = [
        "| " + " | ".join(str(c) for c in head.columns) + " |",
        "|" + "---|" * len(head.columns),
    ]
    lines += [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in head.itertuples(index=False)
    ]
    if len(frame) > max_rows:
        lines.append(f"\n… {len(frame) - max_rows:,} more rows")
    return "\n".join(lines)


def metrics_table(columns: dict[str, Any]) -> str:
    """Metrics side by side: one row per metric of the first column, one column per scorer."""
    names = list(next(iter(columns.values())))
    table = pd.DataFrame(
        {"metric": names, **{k: [v.get(n) for n in names] for k, v in columns.items()}}
    )
    return frame_markdown(table, max_rows=len(names))


def counts_markdown(counts: dict[str, int], key: str, value: str = "count") -> str:
    return frame_markdown(pd.DataFrame({key: list(counts), value: list(counts.values())}))
