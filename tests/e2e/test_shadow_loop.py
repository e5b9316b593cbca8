"""The champion-challenger loop end to end: a real uvicorn server on 127.0.0.1, traffic
replayed with its fraud labels, the shadow report, the sensor's promotion run, rollback."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app as cli
from sentinel_dagster.data.dataset import normalize
from sentinel_dagster.defs.resources import GovernancePolicy, SentinelHome
from sentinel_dagster.defs.sensors import shadow_promotion_sensor
from sentinel_dagster.defs.shadow import promote_job, shadow_comparison_report
from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.shadow.traffic_replay import ServiceClient, replay_traffic
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from sentinel_dagster.training.training_data import split_out_of_time
from sentinel_dagster.training.xgboost_candidate import TrainParams, train_candidate
from serving.registry import Registry
from tests.net import free_port
from tests.serving.bundles import publish_booster

ROOT = Path(__file__).resolve().parents[2]
SHADOW_POLICY = {"min_labelled_events": 1_000, "min_fraud_labels": 10, "min_pr_auc_uplift": 0.05,
                 "max_flip_rate": 0.2, "label_maturity_days": 3, "target_fpr": 0.01}  # fmt: skip


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _publish(registry: Registry, model, run_id: str) -> str:
    version, _ = publish_booster(registry, model.booster, model.threshold, run_id)
    time.sleep(1.1)  # versions are named by the second
    return version


def _policy(home: Path, **shadow: float) -> GovernancePolicy:
    path = home / f"policy-{len(shadow)}-{sorted(shadow.items())}.yaml".replace(" ", "")
    path.write_text(yaml.safe_dump({"shadow": SHADOW_POLICY | shadow}))
    return GovernancePolicy(path=str(path))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Champion (weak) and challenger (strong) published, a real server, 10 days replayed."""
    home = tmp_path_factory.mktemp("loop")
    frame = normalize(simulate_events(SimulationParams(cards=800, days=45, seed=5)).to_pandas())
    cut = frame["event_time"].min() + pd.Timedelta(days=35)  # 3 weeks to train on
    history, traffic = frame[frame["event_time"] < cut], frame[frame["event_time"] >= cut]
    split = split_out_of_time(replay(history).table)
    registry = Registry(home / "registry")
    weak = train_candidate(split, TrainParams(num_boost_round=1, max_depth=1))
    strong = train_candidate(split, TrainParams(num_boost_round=150))
    assert strong.best_iteration >= 5  # a real model, not an early-stopped stump
    champion = _publish(registry, weak, "weakchampion")
    challenger = _publish(registry, strong, "strongchallenger")
    assert registry.pointer("challenger") == challenger
    port = free_port()
    env = {**os.environ, "SENTINEL_HOME": str(home), "SENTINEL_RELOAD_INTERVAL_S": "0.2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _get(f"{url}/v1/models")["challenger"] == challenger)
        client = ServiceClient(url)
        summary = replay_traffic(traffic, client)
        client.close()
        assert summary.errors == 0 and summary.label_errors == 0
        assert summary.events == len(traffic) and summary.labels > 10
        assert set(summary.versions) == {champion}
        # Every answered event is logged before its answer: nothing to wait for.
        assert any((home / "scored").glob("scored-*.jsonl"))
        yield {
            "home": home, "url": url, "champion": champion, "challenger": challenger,
            "traffic": traffic,
        }  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


def _report(live: dict, policy: GovernancePolicy, instance: dg.DagsterInstance) -> dict:
    result = dg.materialize(
        [shadow_comparison_report],
        resources={"sentinel_home": SentinelHome(path=str(live["home"])), "policy": policy},
        instance=instance,
        selection=[shadow_comparison_report],
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _sensor_requests(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    context = dg.build_sensor_context(instance=instance)
    result = shadow_promotion_sensor.evaluate_tick(context)
    return list(result.run_requests or [])


def test_thin_evidence_holds_and_promotes_nothing(live: dict) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        report = _report(live, _policy(live["home"], min_labelled_events=10**7), instance)
        assert report["verdict"] == "hold"
        assert "too few labelled events" in report["report"]
        assert _sensor_requests(instance) == []
    assert Registry(live["home"] / "registry").pointer("champion") == live["champion"]
    assert _get(f"{live['url']}/v1/models")["champion"] == live["champion"]


def test_promote_verdict_sensor_promotion_and_rollback(live: dict, monkeypatch) -> None:
    home, url = live["home"], live["url"]
    with dg.DagsterInstance.ephemeral() as instance:
        report = _report(live, _policy(home), instance)
        details = report["details"]
        assert report["verdict"] == "promote", report["report"]
        assert details["pr_auc"]["challenger"] > details["pr_auc"]["champion"] + 0.05
        assert details["labelled_events"] >= 1_000 and details["fraud_labels"] >= 10
        assert Path(report["report_path"]).exists() and Path(report["plot_path"]).exists()
        # The plot itself is in the metadata, as an image the UI shows inline.
        assert report["plot"].startswith("![champion and challenger](data:image/png;base64,")
        (request,) = _sensor_requests(instance)
        assert request.run_key.startswith("promote-")
        run = promote_job.execute_in_process(
            run_config=request.run_config,
            resources={"sentinel_home": SentinelHome(path=str(home))},
            instance=instance,
        )
        assert run.success
    registry = Registry(home / "registry")
    assert registry.pointers() == {
        "champion": live["challenger"], "challenger": None, "previous_champion": live["champion"]
    }  # fmt: skip
    _wait_for(lambda: _get(f"{url}/v1/models")["champion"] == live["challenger"])
    client = ServiceClient(url)
    status, answer = client.post("/v1/score", {"amount": 42.0})
    assert status == 200 and answer["model_version"] == live["challenger"]

    monkeypatch.setenv("SENTINEL_HOME", str(home))
    result = CliRunner().invoke(cli, ["rollback"])
    assert result.exit_code == 0, result.output
    assert f"{live['challenger']} -> {live['champion']}" in result.output
    _wait_for(lambda: _get(f"{url}/v1/models")["champion"] == live["champion"])
    status, answer = client.post("/v1/score", {"amount": 42.0})
    assert status == 200 and answer["model_version"] == live["champion"]
    again = CliRunner().invoke(cli, ["rollback"])
    assert again.exit_code == 1
    assert "no previous champion" in again.output
    client.close()


def test_the_same_traffic_again_is_too_late_and_is_not_judged(live: dict) -> None:
    # Last in this module: it replays the traffic a second time, as a second demo on the
    # same state did, after the rollback above left the champion serving alone.
    home, url = live["home"], live["url"]
    Registry(home / "registry").set_pointer("challenger", live["challenger"])
    _wait_for(lambda: _get(f"{url}/v1/models")["challenger"] == live["challenger"])
    client = ServiceClient(url)
    summary = replay_traffic(live["traffic"], client)
    client.close()
    assert summary.errors == 0
    with dg.DagsterInstance.ephemeral() as instance:
        report = _report(live, _policy(home, max_too_late_share=0.1), instance)
        assert report["verdict"] == "hold"
        late = report["details"]["too_late_events"]
        assert late > 0.5 * report["events_compared"]  # older than the state's window now
        assert any("too late for its online state" in r for r in report["details"]["reasons"])
        assert _sensor_requests(instance) == []
