"""`sentinel serve --workers 2` and a second server on one real redis-server: the workers
and hosts share one online state and answer exactly what the offline replay computes."""

import datetime as dt
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from serving.features import FEATURE_NAMES
from serving.registry import Registry
from tests.net import answers, free_port
from tests.redis_server import redis_server
from tests.serving.bundles import publish_small
from tests.serving.test_parity_http import _event

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = ROOT / ".venv" / "bin" / "sentinel"


def post(url: str, body: dict) -> dict:
    """One request on a new connection, so the kernel may hand it to either worker."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@contextmanager
def serve(home: Path, redis_url: str, workers: int, **settings: str) -> Iterator[str]:
    """`sentinel serve` on `redis_url`; `settings`: more SENTINEL_* variables."""
    port = free_port()
    env = os.environ | {"SENTINEL_HOME": str(home), "SENTINEL_REDIS_URL": redis_url} | settings
    server = subprocess.Popen(
        [str(SENTINEL), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not answers(f"{url}/ready"):
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Path]]:
    """`sentinel serve --workers 2` and a second `sentinel serve` (as on another host),
    both on one redis-server."""
    home = tmp_path_factory.mktemp("workers")
    publish_small(Registry(home / "registry"), seed=1)
    with (
        redis_server(home / "redis") as redis_url,
        serve(home, redis_url, workers=2) as workers,
        serve(home, redis_url, workers=1) as other_host,
    ):
        yield [workers, other_host], home


def test_ten_payments_of_a_new_card_on_new_connections_read_0_to_9(two_hosts) -> None:
    # (Before the simulated days of the next test: the shared clock must not pass them.)
    (url, _), _ = two_hosts  # the two workers: each request on a new connection
    counts = []
    for i in range(10):
        event = {"transaction_id": f"new-{i}", "card_id": "card-new", "merchant_id": "shop",
                 "amount": 12.5, "event_time": f"2025-12-01T10:00:{i:02d}Z"}  # fmt: skip
        counts.append(post(f"{url}/v1/score?explain=true", event)["features"]["txn_count_10m"])
    assert counts == list(range(10))


def test_workers_and_hosts_answer_exactly_the_offline_replay(two_hosts) -> None:
    """Requests alternate between the two servers; each on a new connection."""
    urls, home = two_hosts
    frame = simulate_events(SimulationParams(cards=60, days=3, seed=4)).to_pandas()
    offline = replay(frame).table
    labels = frame[frame["label_time"].notna()].sort_values(["label_time", "transaction_id"])
    label_rows = labels.to_dict("records")
    online, j = [], 0
    for i, row in enumerate(frame.to_dict("records")):
        url = urls[i % 2]
        while j < len(label_rows) and label_rows[j]["label_time"] <= row["event_time"]:
            label = label_rows[j]
            post(f"{url}/v1/feedback", {
                "transaction_id": label["transaction_id"], "is_fraud": True,
                "label_time": label["label_time"].isoformat(), "card_id": label["card_id"],
                "merchant_id": label["merchant_id"], "event_time": label["event_time"].isoformat(),
            })  # fmt: skip
            j += 1
        body = post(f"{url}/v1/score?explain=true", _event(row))
        online.append([np.nan if v is None else v for v in body["features"].values()])
    expected = offline[list(FEATURE_NAMES)].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.array(online, dtype=float), expected)  # bit for bit
    # Every process wrote its own scored-event log.
    writers = {p.name for p in (home / "scored").glob("scored-*.jsonl")}
    assert len(writers) >= 2, writers
    answered = sum(len(p.read_text().splitlines()) for p in (home / "scored").glob("scored-*"))
    assert answered >= len(frame)


def test_a_retry_on_another_worker_or_host_gets_the_original_answer(two_hosts) -> None:
    """Last in this module: its event is stamped now, ahead of the simulated days."""
    urls, home = two_hosts
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    payment = {"transaction_id": "retried-1", "card_id": "card-r", "merchant_id": "shop",
               "amount": 42.0, "event_time": now.isoformat()}  # fmt: skip
    first = post(f"{urls[1]}/v1/score", payment)  # the other host (one worker)
    assert first["state"] == "added"
    # Its answer is queued there until its next call's pipeline carries it (or its idle
    # flush, a few ms later): that call, so the retries below cannot come earlier.
    nudge = payment | {"transaction_id": "retried-0", "card_id": "card-q"}
    assert post(f"{urls[1]}/v1/score", nudge)["state"] == "added"
    for url in (urls[0],) * 4 + (urls[1],):  # the two workers (new connections), and back
        retry = post(f"{url}/v1/score", payment)
        assert retry == first | {"state": "duplicate"}
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"{url}/v1/score", payment | {"amount": 43.0})
        assert refused.value.code == 409
        detail = json.load(refused.value)["detail"][0]
        assert detail["loc"] == ["body", "transaction_id"]
    logged = [
        line
        for path in (home / "scored").glob("scored-*.jsonl")
        for line in path.read_text().splitlines()
        if '"retried-1"' in line
    ]
    assert len(logged) == 1  # scored once; every retry was the stored answer
