"""Jobs. `main_job` is what `make run` materializes."""

import dagster as dg

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.groups("data", "features"),
    description="Materialize the lineage: validated transaction data, then its features.",
)
