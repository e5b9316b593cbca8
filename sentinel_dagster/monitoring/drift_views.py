"""What the Dagster UI shows of a drift evaluation (drift.py): Markdown tables and the
reference-against-live plots."""

import numpy as np
import pandas as pd

from sentinel_dagster.monitoring.drift import DriftReport, DriftWatch
from sentinel_dagster.reporting.markdown import frame_markdown
from sentinel_dagster.reporting.plots import binned_shares_png
from serving.features import FEATURE_INDEX


def feature_table(evaluation: DriftWatch, bound: float) -> pd.DataFrame:
    """One row per judged feature, largest PSI first: PSI, missing shares, over the bound."""
    report, reference, live = evaluation.report, evaluation.reference, evaluation.live
    if not report.feature_psi or reference is None or live is None:
        return pd.DataFrame(columns=["feature", "psi", "live_missing", "reference_missing"])
    rows = [
        {
            "feature": name,
            "psi": psi,
            "live_missing": float(np.isnan(live.features[:, FEATURE_INDEX[name]]).mean()),
            "reference_missing": reference.features[name].shares[-1],
            "over_bound": "**yes**" if psi > bound else "",
        }
        for name, psi in report.feature_psi.items()
    ]
    return pd.DataFrame(rows).sort_values("psi", ascending=False, ignore_index=True)


def summary_markdown(report: DriftReport) -> str:
    """The evaluation in a few lines: what was compared, the numbers, the conclusion."""

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [
        "| | value |",
        "|---|---|",
        f"| champion | {report.champion or 'none'} |",
        f"| status | **{report.status}** |",
        f"| window | last {report.window_hours:g} h |",
        f"| champion's events | {report.events:,} |",
        f"| answered by its {report.reference_model or '-'} model | {report.score_events:,} |",
        f"| decided by the champion | {report.decline_events:,} |",
        f"| logged with features | {report.feature_events:,} |",
        f"| reference | {report.reference_from or '-'} ({report.reference_rows:,} rows) |",
        f"| score PSI | {number(report.score_psi, '.3f')} |",
        f"| decline rate live | {number(report.decline_rate_live, '.2%')} |",
        f"| decline rate reference | {number(report.decline_rate_reference, '.2%')} |",
        f"| decline rate change | {number(report.decline_rate_change, '+.4f')} |",
    ]
    return "\n".join(rows) + f"\n\n{report.message}"


def drift_png(evaluation: DriftWatch, worst: int = 4) -> bytes | None:
    """Reference against live shares per bin: the `worst` features by PSI, then the scores;
    None when nothing was compared."""
    report, reference, live = evaluation.report, evaluation.reference, evaluation.live
    if reference is None or live is None:
        return None
    panels = []
    for name in sorted(report.feature_psi, key=lambda n: -report.feature_psi[n])[:worst]:
        bins = reference.features[name]
        panels.append(
            (
                f"{name} (PSI {report.feature_psi[name]:.2f})",
                bins.labels(),
                np.asarray(bins.shares),
                bins.share_of(live.features[:, FEATURE_INDEX[name]]),
            )
        )
    if report.score_psi is not None:
        bins = reference.scores
        title = f"champion score (PSI {report.score_psi:.2f})"
        panels.append((title, bins.labels(), np.asarray(bins.shares), bins.share_of(live.scores)))
    return binned_shares_png(panels) if panels else None


def table_markdown(evaluation: DriftWatch, bound: float) -> str:
    table = feature_table(evaluation, bound)
    if table.empty:
        return "features not judged: " + ("; ".join(evaluation.report.not_judged) or "-")
    return frame_markdown(table, max_rows=len(table))
