"""Jobs. `main_job` is what `make run` materializes."""

import dagster as dg

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.groups("data"),
    description="Materialize the lineage: transaction data and its validation.",
)
