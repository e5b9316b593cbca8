"""Small Markdown renderers for Dagster metadata (no `tabulate` dependency needed)."""

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


def counts_markdown(counts: dict[str, int], key: str, value: str = "count") -> str:
    return frame_markdown(pd.DataFrame({key: list(counts), value: list(counts.values())}))
