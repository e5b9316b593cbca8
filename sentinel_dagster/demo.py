"""`sentinel demo`: the champion-challenger loop on the running system (after `make run`).

Every step is a Dagster run in the instance the UI shows, or traffic the service scores:
train a challenger on newer data (published as challenger if it passes the gate), replay a
week of later traffic with its chargebacks, materialize the shadow report, and wait for
`shadow_promotion_sensor` (in the running daemon) to promote on a "promote" verdict.
"""

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from sentinel_dagster.dataset import normalize
from sentinel_dagster.runner import local_instance, materialize_lineage
from sentinel_dagster.simulator import SimulationParams, simulate_events
from sentinel_dagster.traffic_replay import ServiceClient, replay_traffic
from serving.registry import Registry

# Newer (and more) training data than the default lineage's 60 days from 2026-01-01, and
# traffic from the week after both.
NEWER_DATA = {"cards": 10_000, "days": 75, "seed": 8, "start": "2026-01-15"}
TRAFFIC = SimulationParams(cards=4_000, days=7, seed=9, start="2026-04-01")
SENSOR_WAIT_S = 300.0


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


def run_demo(home: Path, api_url: str, say: Callable[[str], None]) -> str:
    """The loop, step by step; returns the verdict."""
    registry = Registry(home / "registry")
    champion = _models(api_url).get("champion")
    if champion is None:
        raise DemoError("the service has no champion yet; `make run` publishes one")
    say(f"champion served now: {champion}")

    say("1/4 training a challenger on newer data (Dagster run; see the UI's Runs page)")
    newer = {"ops": {"transactions": {"config": NEWER_DATA}}}
    run = materialize_lineage(run_config=newer, job="main_job", launched_by="demo")
    if not run.success:
        raise DemoError(f"the training run {run.run_id} failed: {run.failure}")
    challenger = registry.pointer("challenger")
    if challenger is None or challenger == champion:
        why = "; ".join(run.refused) or "see promotion_decision"
        raise DemoError(f"the new candidate did not pass the promotion gate: {why}")
    say(f"    published {challenger} as challenger")
    if not _wait(api_url, "challenger", challenger, 60):
        raise DemoError("the service did not load the challenger within 60 s")
    say("    the service shadows it (GET /v1/models)")

    say(f"2/4 replaying {TRAFFIC.days} days of later traffic with its chargebacks")
    traffic = normalize(simulate_events(TRAFFIC).to_pandas())
    client = ServiceClient(api_url)
    try:
        summary = replay_traffic(traffic, client)
    finally:
        client.close()
    say(f"    {summary.one_line()}")  # every answered event is in the scored-event log

    say("3/4 materializing shadow_comparison_report")
    report_run = materialize_lineage(job="shadow_report_job", launched_by="demo")
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
        say("4/4 nothing to promote: the champion keeps serving")
        return str(report["verdict"])

    say("4/4 waiting for shadow_promotion_sensor to promote (it checks every 30 s)")
    if not _wait(api_url, "champion", challenger, SENSOR_WAIT_S):
        raise DemoError(
            "the challenger was not promoted in time: is the Dagster daemon running "
            "(`make run`) and shadow_promotion_sensor on?"
        )
    say(f"    the service now answers with champion {challenger}; `sentinel rollback` undoes it")
    return "promote"
