"""Group `shadow`: the champion-challenger comparison on live traffic, and the jobs that
move the champion (promotion on a "promote" verdict, rollback)."""

import datetime as dt
import json
from typing import Any

import dagster as dg
from pydantic import Field

from sentinel_dagster.defs.catalog import catalog
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.defs.timing import timed
from sentinel_dagster.defs.training import registry_of
from sentinel_dagster.governance import champion
from sentinel_dagster.reporting import plots
from sentinel_dagster.reporting.plots import png_markdown, shadow_comparison_png
from sentinel_dagster.shadow import shadow_report

# Every hour at :15 UTC, whatever changed upstream: the traffic it reads is the service's log,
# not an asset (`on_cron` would wait for model_bundle to update).
HOURLY = (
    dg.AutomationCondition.cron_tick_passed("15 * * * *", "UTC")
    & ~dg.AutomationCondition.in_progress()
)


@dg.asset(
    group_name="shadow",
    deps=["model_bundle"],
    kinds={"python"},
    automation_condition=HOURLY.with_label("hourly at :15 UTC"),
    **catalog("shadow", shadow_report, plots),
)
@timed
def shadow_comparison_report(
    context: dg.AssetExecutionContext, sentinel_home: SentinelHome, policy: GovernancePolicy
) -> dg.MaterializeResult:
    """Champion against challenger on the traffic the service scored in shadow, judged by
    the `shadow:` policy: "promote" or "hold" with its reasons."""
    home = sentinel_home.root()
    registry = registry_of(sentinel_home)
    served, shadowed = registry.pointer("champion"), registry.pointer("challenger")
    live_since = None  # the challenger's publication day: older logs cannot compare the pair
    if shadowed is not None:
        manifest = json.loads((registry.bundle_dir(shadowed) / "manifest.json").read_text())
        live_since = dt.datetime.fromisoformat(manifest["created_at"]).astimezone(dt.UTC).date()
    scored_dir = home / "scored"
    scored = shadow_report.read_log(scored_dir, "scored", live_since)
    feedback = shadow_report.read_log(scored_dir, "feedback", live_since)
    rules = policy.load().shadow
    events = shadow_report.evidence(scored, feedback, served, shadowed, rules.label_maturity_days)
    report = shadow_report.judge(events, served, shadowed, rules)
    now = dt.datetime.now(dt.UTC)
    markdown = shadow_report.to_markdown(report, now)
    out = home / "reports" / "shadow" / f"{now:%Y%m%dT%H%M%S}-{report.challenger or 'none'}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown)
    metadata: dict[str, Any] = {
        "verdict": report.verdict,
        "champion": report.champion or "none",
        "challenger": report.challenger or "none",
        "events_compared": report.events_compared,
        "labelled_events": report.labelled_events,
        "fraud_labels": report.fraud_labels,
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(out.with_suffix(".md"))),
        "details": dg.MetadataValue.json(report.to_dict()),
    }
    if not events.empty:
        png = shadow_comparison_png(
            events["champion_score"].to_numpy(float),
            events["challenger_score"].to_numpy(float),
            events["label"].to_numpy(float),
        )
        out.with_suffix(".png").write_bytes(png)
        metadata["plot"] = dg.MetadataValue.md(png_markdown("champion and challenger", png))
        metadata["plot_path"] = dg.MetadataValue.path(str(out.with_suffix(".png")))
    context.log.info(f"shadow verdict: {report.verdict} ({'; '.join(report.reasons) or 'ok'})")
    return dg.MaterializeResult(metadata=metadata)


class PromotionConfig(dg.Config):
    challenger: str = Field(description="The challenger version the report judged.")
    champion: str | None = Field(default=None, description="The champion it was judged against.")


@dg.op
def promote_challenger(
    context: dg.OpExecutionContext, config: PromotionConfig, sentinel_home: SentinelHome
) -> None:
    """Challenger → champion (the old one becomes previous_champion); MLflow aliases follow."""
    try:
        move = champion.promote_challenger(
            registry_of(sentinel_home), config.challenger, config.champion, sentinel_home.root()
        )
    except champion.ChampionError as exc:
        raise dg.Failure(str(exc)) from None
    context.log.info(f"champion is now {move.champion} (was {move.replaced})")
    if move.alias_error:
        context.log.warning(f"MLflow aliases did not follow: {move.alias_error}")


@dg.op
def rollback_champion(context: dg.OpExecutionContext, sentinel_home: SentinelHome) -> None:
    """previous_champion → champion; MLflow aliases follow."""
    try:
        move = champion.rollback(registry_of(sentinel_home), sentinel_home.root())
    except champion.ChampionError as exc:
        raise dg.Failure(str(exc)) from None
    context.log.info(f"champion is now {move.champion} (rolled back from {move.replaced})")
    if move.alias_error:
        context.log.warning(f"MLflow aliases did not follow: {move.alias_error}")


@dg.job(description="Make the shadowed challenger the champion (launched by the sensor).")
def promote_job() -> None:
    promote_challenger()


@dg.job(description="Restore the previous champion.")
def rollback_job() -> None:
    rollback_champion()
