"""`sentinel replay`: the order events and labels are sent in, and its bad paths."""

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app
from sentinel_dagster.shadow.traffic_replay import event_body, label_body, timeline


def _frame() -> pd.DataFrame:
    t = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame({
        "transaction_id": ["a", "b", "c", "d"],
        "card_id": "c1", "merchant_id": "m1", "amount": 10.0,
        "event_time": [t, t + pd.Timedelta(hours=2), t + pd.Timedelta(hours=1),
                       t + pd.Timedelta(hours=3)],
        "channel": "pos", "device_id": None, "lat": float("nan"), "lon": float("nan"),
        "merchant_category": "grocery",
        "is_fraud": [1, 0, 1, 0],
        "label_time": [t + pd.Timedelta(hours=2), pd.NaT, t + pd.Timedelta(days=5), pd.NaT],
    })  # fmt: skip


def test_events_in_time_order_with_labels_first_at_ties_then_the_rest_drained() -> None:
    order = [(kind, row["transaction_id"]) for kind, row in timeline(_frame())]
    assert order == [("event", "a"), ("event", "c"), ("label", "a"), ("event", "b"),
                     ("event", "d"), ("label", "c")]  # fmt: skip
    undrained = [(kind, row["transaction_id"]) for kind, row in timeline(_frame(), drain=False)]
    assert undrained[-1] == ("event", "d") and ("label", "c") not in undrained


def test_bodies_carry_iso_times_and_leave_out_missing_fields() -> None:
    row = _frame().to_dict("records")[0]
    event = event_body(row)
    assert event["event_time"] == "2026-01-01T00:00:00+00:00"
    assert "device_id" not in event and "lat" not in event
    assert label_body(row) == {
        "transaction_id": "a", "is_fraud": True, "label_time": "2026-01-01T02:00:00+00:00",
        "card_id": "c1", "merchant_id": "m1", "event_time": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip


def test_replay_bad_paths_are_one_line_errors(small_parquet: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["replay", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2 and "file not found" in missing.output
    bad_url = runner.invoke(app, ["replay", str(small_parquet), "--url", "ftp://x"])
    assert bad_url.exit_code == 2 and "--url must look like http://HOST:PORT" in bad_url.output
    # Nothing listens on port 9 of the loopback interface.
    down = runner.invoke(app, ["replay", str(small_parquet), "--url", "http://127.0.0.1:9"])
    assert down.exit_code == 2 and "the service is not answering" in down.output
    for result in (missing, bad_url, down):
        assert "Traceback" not in result.output
