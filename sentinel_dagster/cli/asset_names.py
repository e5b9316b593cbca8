"""The lineage's asset names and groups, as plain data: the command line checks a selection
against them before importing Dagster and the definitions (about 15 s), so a typo is
answered at once. tests/sentinel_dagster/test_definitions.py keeps this in step with the
definitions."""

import re

ASSET_GROUPS: dict[str, str] = {
    "transactions": "data",
    "daily_transaction_stats": "data",
    "transaction_features": "features",
    "training_set": "training",
    "candidate_model": "training",
    "candidate_evaluation": "training",
    "promotion_decision": "training",
    "model_bundle": "training",
    "shadow_comparison_report": "shadow",
    "champion_drift": "monitoring",
    "feature_ablation": "analysis",
}
# Beyond names, groups, keys, commas and the graph operators, leave the judging to Dagster.
_SIMPLE = re.compile(r"^[\w:,\s*+]+$")


def unknown_in_selection(selection: str) -> str | None:
    """Why a simple selection ('group:data', 'a,b', '*model_bundle', 'key:x+') names no
    asset of the lineage, or None (also for selections too rich to check here)."""
    if not _SIMPLE.match(selection) or re.search(r"\b(and|or|not)\b", selection):
        return None
    groups = sorted(set(ASSET_GROUPS.values()))
    for token in re.split(r"[,\s]+", selection.strip()):
        name = token.strip("*+")
        if not name:  # '*' alone: everything
            continue
        kind, _, value = name.rpartition(":")
        if kind == "group" and value not in groups:
            return f"no asset group {value!r}: the groups are {', '.join(groups)}"
        if kind in ("", "key") and value not in ASSET_GROUPS:
            return f"no asset {value!r}: the assets are {', '.join(ASSET_GROUPS)}"
    return None
