"""`sentinel demo`: the champion-challenger loop on the running system (after `make run`).

The story: since March a crew has been emptying cloned cards at ATMs late at night
(`atm_cash_out`, the simulator's emerging scenario). The champion, trained on January and
February, has never seen it; a challenger trained on data up to the end of March has.

Every step is a Dagster run in the instance the UI shows, or traffic the service scores:
train a challenger on the newer data (published as challenger if it passes the gate),
replay a week of later traffic with its chargebacks, materialize the shadow report, wait for
`shadow_promotion_sensor` (in the running daemon) to promote on a "promote" verdict, then
roll back, so that the demo ends where it started and runs again the same way. Each run's
traffic starts the day after the latest event the service has seen, with ids of its own:
an earlier run's traffic again would be too late for the online state, and the report
would refuse to judge it.
"""

import datetime as dt
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from sentinel_dagster.cli.runner import local_instance, materialize_lineage, with_policy
from sentinel_dagster.data.dataset import normalize
from sentinel_dagster.governance import champion as champions
from sentinel_dagster.shadow.traffic_replay import ServiceClient, replay_traffic
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from serving.registry import Registry

EMERGING_FROM = "2026-03-01"  # the cash-outs start: after the default data's 60 days


@dataclass(frozen=True)
class DemoConfig:
    # Newer (and more) training data than the default lineage's 60 days from 2026-01-01,
    # with four weeks of cash-outs in it.
    newer_data: dict[str, Any] = field(
        default_factory=lambda: {
            "cards": 10_000, "days": 75, "seed": 8, "start": "2026-01-15",
            "emerging_from": EMERGING_FROM,
        }
    )  # fmt: skip
    # A week of later traffic (~48,000 payments); its start moves past what the service saw.
    traffic: SimulationParams = field(
        default_factory=lambda: SimulationParams(
            cards=4_000, days=7, seed=9, start="2026-04-01", emerging_from=EMERGING_FROM
        )
    )
    sensor_wait_s: float = 300.0
    reload_wait_s: float = 60.0
    policy: Path | None = None  # another policy file for both runs (default: the project's)


class DemoError(RuntimeError):
    """A step could not be done; the message says which and why."""


def _models(api_url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{api_url}/v1/models", timeout=5) as response:
            return dict(json.load(response))
    except OSError as exc:
        raise DemoError(
            f"the service at {api_url} is not answering ({exc}); start `make run`"
        ) from None


def _wait(api_url: str, key: str, version: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _models(api_url).get(key) == version:
            return True
        time.sleep(1.0)
    return False


def _latest_report(home: Path) -> dict[str, Any]:
    with local_instance(home) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("shadow_comparison_report"))
    if event is None or event.asset_materialization is None:
        raise DemoError("no shadow report was recorded")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def traffic_start(configured: str, service_clock: str | None) -> str:
    """The traffic's first day: the configured one, or the day after the latest event the
    service has seen if that is later (an earlier demo's traffic, say)."""
    if service_clock is None:
        return configured
    after = (dt.datetime.fromisoformat(service_clock) + dt.timedelta(days=1)).date()
    return max(dt.date.fromisoformat(configured), after).isoformat()


def demo_traffic(params: SimulationParams) -> pd.DataFrame:
    """The traffic of `params`, with transaction ids of its own (prefixed with its first
    day): the simulator numbers every run's ids from zero."""
    traffic = normalize(simulate_events(params).to_pandas())
    traffic["transaction_id"] = params.start.replace("-", "") + "-" + traffic["transaction_id"]
    return traffic


def run_demo(
    home: Path, api_url: str, say: Callable[[str], None], config: DemoConfig | None = None
) -> str:
    """The loop, step by step; returns the verdict."""
    config = config or DemoConfig()
    registry = Registry(home / "registry")
    models = _models(api_url)
    champion = models.get("champion")
    if champion is None:
        raise DemoError("the service has no champion yet; `make run` publishes one")
    say(f"champion served now: {champion} (trained before the ATM cash-outs began)")

    say(
        "1/5 training a challenger on newer data, with four weeks of ATM cash-outs "
        "(Dagster run main_job; see the UI's Runs page)"
    )
    before = registry.pointer("challenger")  # an earlier demo's, held: not this run's
    newer = {"ops": {"transactions": {"config": config.newer_data}}}
    if config.policy is not None:
        newer = with_policy(newer, config.policy)
    run = materialize_lineage(run_config=newer, job="main_job", launched_by="demo")
    if not run.success:
        raise DemoError(f"the training run {run.run_id} failed: {run.failure}")
    challenger = registry.pointer("challenger")
    if challenger is None or challenger in (champion, before):
        why = "; ".join(run.refused) or "see promotion_decision"
        raise DemoError(f"the new candidate did not pass the promotion gate: {why}")
    say(f"    published {challenger} as challenger")
    if not _wait(api_url, "challenger", challenger, config.reload_wait_s):
        raise DemoError("the service did not load the challenger in time")
    say("    the service shadows it (GET /v1/models)")

    clock = (models.get("features") or {}).get("clock")
    start = traffic_start(config.traffic.start, clock)
    params = replace(config.traffic, start=start)
    say(f"2/5 replaying {params.days} days of traffic from {start}, with its chargebacks")
    traffic = demo_traffic(params)
    client = ServiceClient(api_url)
    try:
        summary = replay_traffic(traffic, client)
    finally:
        client.close()
    say(f"    {summary.one_line()}")  # every answered event is in the scored-event log

    say("3/5 materializing shadow_comparison_report (Dagster run shadow_report_job)")
    judged = None if config.policy is None else with_policy(None, config.policy)
    report_run = materialize_lineage(run_config=judged, job="shadow_report_job", launched_by="demo")
    if not report_run.success:
        raise DemoError(f"the report run {report_run.run_id} failed: {report_run.failure}")
    report = _latest_report(home)
    details = report["details"]
    pr_auc = {k: f"{v:.3f}" for k, v in details["pr_auc"].items()}
    say(
        f"    verdict: {report['verdict']}; PR-AUC champion {pr_auc.get('champion', '-')} vs "
        f"challenger {pr_auc.get('challenger', '-')} on {details['labelled_events']:,} "
        f"labelled events ({details['fraud_labels']:,} frauds); report: {report['report_path']}"
    )
    if report["verdict"] != "promote":
        for reason in details["reasons"]:
            say(f"    held: {reason}")
        say("4/5 nothing to promote: the champion keeps serving")
        return str(report["verdict"])

    say("4/5 waiting for shadow_promotion_sensor to promote (it checks every 30 s)")
    if not _wait(api_url, "champion", challenger, config.sensor_wait_s):
        raise DemoError(
            "the challenger was not promoted in time: is the Dagster daemon running "
            "(`make run`) and shadow_promotion_sensor on?"
        )
    say(f"    the service now answers with champion {challenger}")

    say("5/5 rolling back, as `sentinel rollback` does (and the demo can run again)")
    try:
        move = champions.rollback(registry, home)
    except champions.ChampionError as exc:
        raise DemoError(f"the rollback failed: {exc}") from None
    if not _wait(api_url, "champion", move.champion, config.reload_wait_s):
        raise DemoError("the service did not load the previous champion in time")
    say(f"    champion: {move.replaced} -> {move.champion}; the service answers with it again")
    return "promote"
