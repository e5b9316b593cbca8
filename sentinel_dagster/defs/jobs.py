"""Jobs. `main_job` is what `make run` materializes: the whole lineage to a published bundle."""

import dagster as dg

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.groups("data", "features", "training"),
    description="Materialize the lineage: data, features, training, gate and bundle.",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.groups("data", "features", "training")
    - dg.AssetSelection.assets("model_bundle"),
    description="Retrain and judge a candidate; model_bundle's automation publishes a pass.",
)

publish_job = dg.define_asset_job(
    "publish_job",
    selection=dg.AssetSelection.assets("model_bundle"),
    description="Publish the latest candidate whose promotion decision passed.",
)

shadow_report_job = dg.define_asset_job(
    "shadow_report_job",
    selection=dg.AssetSelection.assets("shadow_comparison_report"),
    description="Refresh the shadow comparison; shadow_promotion_sensor acts on its verdict.",
)

drift_watch_job = dg.define_asset_job(
    "drift_watch_job",
    selection=dg.AssetSelection.assets("champion_drift"),
    description="Compare the champion's live traffic with its bundle's drift reference.",
)
