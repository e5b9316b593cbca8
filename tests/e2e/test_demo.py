"""`sentinel demo` end to end on a small configuration: the real stack (`sentinel up`: the
Dagster daemon with its sensors, the scoring service), a champion trained before the ATM
cash-outs began, a challenger that has seen them, promotion by the sensor, the rollback, and
a second run on the same SENTINEL_HOME that goes the same way."""

import os
import signal
from dataclasses import replace
from pathlib import Path

from sentinel_dagster.cli.demo import DemoConfig, run_demo, traffic_start
from sentinel_dagster.cli.runner import materialize_lineage
from sentinel_dagster.simulation.simulator import SimulationParams
from serving.registry import Registry
from tests.net import free_port, start_up

ROOT = Path(__file__).resolve().parents[2]
# A month before the cash-outs for the champion; for the challenger, two months with four
# weeks of them; then five days of traffic (about 15,000 payments).
CHAMPION_DATA = {"cards": 2_000, "days": 35, "seed": 21, "start": "2026-01-01"}
# A small holdout moves the profile model's recall by several points either way, so the
# gate against the champion is looser here (the shadow verdict keeps the default rules).
LOOSER_GATE = "promotion:\n  max_regression:\n    pr_auc: 0.05\n    recall_at_1pct_fpr: 0.15\n"
SMALL = DemoConfig(
    newer_data={"cards": 2_000, "days": 60, "seed": 8, "start": "2026-01-15",
                "emerging_from": "2026-02-15"},
    traffic=SimulationParams(cards=2_000, days=5, seed=9, start="2026-03-20",
                             emerging_from="2026-02-15"),
    sensor_wait_s=180.0,
)  # fmt: skip


def test_traffic_starts_after_what_the_service_has_seen() -> None:
    assert traffic_start("2026-04-01", None) == "2026-04-01"
    assert traffic_start("2026-04-01", "2026-03-10T08:00:00+00:00") == "2026-04-01"
    assert traffic_start("2026-04-01", "2026-04-07T23:59:00+00:00") == "2026-04-08"


def test_the_demo_promotes_for_a_reason_rolls_back_and_runs_again(sentinel_home: Path) -> None:
    first = materialize_lineage(
        run_config={"ops": {"transactions": {"config": CHAMPION_DATA}}}, home=sentinel_home
    )
    assert first.success, first.failure
    registry = Registry(sentinel_home / "registry")
    champion = registry.pointer("champion")
    assert champion is not None
    policy = sentinel_home / "small_policy.yaml"
    policy.write_text(LOOSER_GATE)
    config = replace(SMALL, policy=policy)
    ui, api = free_port(), free_port()
    env = {**os.environ, "SENTINEL_RELOAD_INTERVAL_S": "0.5"}
    up = start_up(sentinel_home / "up.log", ui, api, env)
    try:
        url = f"http://127.0.0.1:{api}"
        runs = []
        for _ in range(2):  # the second run on the same state goes the same way
            said: list[str] = []
            verdict = run_demo(sentinel_home, url, said.append, config)
            runs.append(said)
            assert verdict == "promote", "\n".join(said)
            assert registry.pointer("champion") == champion  # rolled back at the end
        assert up.poll() is None
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    for said in runs:
        text = "\n".join(said)
        assert "ATM cash-outs" in text
        assert any(line.strip().startswith("verdict: promote") for line in said), text
        assert f"-> {champion}; the service answers with it again" in text
    # The second run's traffic came after the first's: none of it was too late.
    starts = [next(line for line in said if line.startswith("2/5")) for said in runs]
    assert "from 2026-03-20" in starts[0] and "from 2026-03-20" not in starts[1], starts
