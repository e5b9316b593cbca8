"""The online state's stores, measured: in-memory vs Redis, one and two workers.

1. HTTP: `sentinel serve` (the shipped command) scoring raw events with wrk, in rounds that
   alternate a trivial FastAPI endpoint, the in-memory store (1 worker), Redis (1 worker)
   and Redis (2 workers); ratios to the trivial endpoint are taken round by round.
2. Redis costs per event, in-process through `RedisFeatureEngine`: round trips, bytes on
   the wire and Redis CPU (from Redis's own INFO counters), alone and in 1,000-event batches.
3. Restart at 400k cards: the in-memory service's restore (snapshot load) and Redis's
   (an AOF reload; a worker itself loads nothing).

Run: `.venv/bin/python -m benchmarks.state_stores` (also part of `make bench`). Redis is a
redis-server this script starts on a free loopback port, with `appendonly yes` and
`appendfsync everysec`, as docs/architecture.md recommends for production.
"""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from pathlib import Path

import redis

from benchmarks.http.run import ROUNDS, publish_models, wrk
from benchmarks.results import save_results
from serving.feature_engine import EngineConfig, FeatureEngine
from serving.redis_state import RedisFeatureEngine
from tests.net import answers, free_port

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = ROOT / ".venv" / "bin" / "sentinel"
T0 = 1_767_225_600.0
RESTART_CARDS = 400_000


@contextmanager
def redis_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        _wait(lambda: _pings(client), 60)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=60)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:  # not up yet, or still loading its AOF
        return False


def _wait(ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError("not ready in time")
        time.sleep(0.05)


@contextmanager
def http_server(command: list[str], probe: str, env: dict[str, str]) -> Iterator[str]:
    """A server on a free loopback port (`{port}` in `command`), up once `probe` answers."""
    port = free_port()
    process = subprocess.Popen(
        [part.format(port=port) for part in command], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: answers(f"{url}{probe}"), 120)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def sentinel_serve(
    home: Path, workers: int = 1, **env: str
) -> contextlib.AbstractContextManager[str]:
    """The shipped command: `sentinel serve`, as `make run` starts it."""
    command = [str(SENTINEL), "serve", "--host", "127.0.0.1", "--port", "{port}",
               "--workers", str(workers)]  # fmt: skip
    return http_server(command, "/ready", {"SENTINEL_HOME": str(home), **env})


def trivial_server() -> ContextManager[str]:
    command = [sys.executable, "-m", "uvicorn", "benchmarks.http.trivial_app:app", "--host",
               "127.0.0.1", "--port", "{port}", "--log-level", "warning"]  # fmt: skip
    return http_server(command, "/trivial", {})


def http_rounds(tmp: Path) -> dict[str, object]:
    home = tmp / "http"
    publish_models(home)
    runs: dict[str, list[dict[str, float]]] = {
        "trivial": [], "memory_1_worker": [], "redis_1_worker": [], "redis_2_workers": []
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        url, _ = stack.enter_context(redis_server(tmp / "redis-http"))
        targets = {
            "trivial": (f"{stack.enter_context(trivial_server())}/trivial", None),
            "memory_1_worker": (stack.enter_context(sentinel_serve(home)), "raw_event.lua"),
            "redis_1_worker": (
                stack.enter_context(sentinel_serve(home, 1, SENTINEL_REDIS_URL=url)),
                "raw_event.lua",
            ),
            "redis_2_workers": (
                stack.enter_context(sentinel_serve(home, 2, SENTINEL_REDIS_URL=url)),
                "raw_event.lua",
            ),
        }
        for _ in range(ROUNDS):  # each round measures all four within a minute
            for name, (target, script) in targets.items():
                path = target if script is None else f"{target}/v1/score"
                runs[name].append(wrk(path, script))
    out: dict[str, object] = {}
    for name, results in runs.items():
        summary = {k: round(statistics.median(r[k] for r in results), 2) for k in results[0]}
        if name != "trivial":
            ratios = [r["rps"] / t["rps"] for r, t in zip(results, runs["trivial"], strict=True)]
            summary["throughput_ratio"] = round(statistics.median(ratios), 3)
        out[name] = summary
    return out


def _events(n: int, cards: int, merchants: int, start: float = T0) -> list[tuple]:
    return [
        (f"e{i}", start + i * 0.05, f"card{i % cards}", f"m{i % merchants}", 10.0 + i % 90,
         "online", f"dev{i % 300}", 40.7, -74.0, "grocery")
        for i in range(n)
    ]  # fmt: skip


def redis_costs(tmp: Path) -> dict[str, object]:
    """Per event: round trips, bytes in and out of Redis, Redis CPU; alone and batched."""
    out: dict[str, object] = {}
    with redis_server(tmp / "redis-costs") as (url, _):
        client = redis.Redis.from_url(url)
        engine = RedisFeatureEngine.from_url(url)
        warm = _events(100_000, 5_000, 500)
        for i in range(0, len(warm), 1_000):  # 20 events per card of history first
            engine.process_many(warm[i : i + 1_000])
        measured = _events(20_000, 5_000, 500, start=warm[-1][1] + 1)
        for name, batch in (("single", 1), ("batch_1000", 1_000)):
            part = measured[:10_000] if name == "single" else measured[10_000:]
            client.config_resetstat()
            started = time.perf_counter()
            if batch == 1:
                for e in part:
                    engine.process(*e)
            else:
                for i in range(0, len(part), batch):
                    engine.process_many(part[i : i + batch])
            elapsed = time.perf_counter() - started
            stats = client.info("stats")
            commands = client.info("commandstats")
            script = commands.get("cmdstat_evalsha", {})
            n = len(part)
            out[name] = {
                "events_per_s_one_client": round(n / elapsed),
                "round_trips_per_event": round(1 / batch, 4),
                # INFO's counters include these INFO/CONFIG calls: a few hundred bytes in all.
                "bytes_to_redis_per_event": round(stats["total_net_input_bytes"] / n),
                "bytes_from_redis_per_event": round(stats["total_net_output_bytes"] / n),
                "redis_cpu_us_per_event": round(script.get("usec_per_call", 0.0), 1),
                "redis_commands_per_event": round(
                    sum(v["calls"] for k, v in commands.items() if k != "cmdstat_evalsha") / n, 1
                ),
            }
        # A busy merchant: one merchant, 20 payments a second for 2 hours (144k payments).
        busy = [(f"b{i}", T0 + 90 * 86_400 + i * 0.05, f"bc{i % 20_000}", "mega-shop", 5.0,
                 None, None, float("nan"), float("nan"), None) for i in range(144_000)]  # fmt: skip
        for i in range(0, len(busy) - 1_000, 1_000):
            engine.process_many(busy[i : i + 1_000])
        client.config_resetstat()
        engine.process_many(busy[-1_000:])
        stats = client.info("stats")
        out["busy_merchant_bytes_from_redis_per_event"] = round(
            stats["total_net_output_bytes"] / 1_000
        )
        out["busy_merchant_redis_cpu_us_per_event"] = round(
            client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"], 1
        )
    return out


def restart_times(tmp: Path) -> dict[str, object]:
    """Start-up with 400k cards of state: the in-memory service's snapshot restore, and
    Redis reloading its AOF (a Redis worker loads nothing)."""
    out: dict[str, object] = {}
    events = _events(RESTART_CARDS, RESTART_CARDS, 5_000)
    memory = FeatureEngine(config=EngineConfig())
    for e in events:
        memory.process(*e)
    snapshot = tmp / "restart" / "feature_state.pkl"
    started = time.perf_counter()
    memory.snapshot(snapshot)
    out["memory_snapshot_write_s"] = round(time.perf_counter() - started, 2)
    out["memory_snapshot_mb"] = round(snapshot.stat().st_size / 1e6, 1)
    del memory
    started = time.perf_counter()
    FeatureEngine.restore(snapshot)
    out["memory_restore_s"] = round(time.perf_counter() - started, 2)
    folder = tmp / "redis-restart"
    with redis_server(folder) as (url, _):
        engine = RedisFeatureEngine.from_url(url)
        for i in range(0, len(events), 1_000):
            engine.process_many(events[i : i + 1_000])
        client = redis.Redis.from_url(url)
        out["redis_used_memory_mb"] = round(client.info("memory")["used_memory"] / 1e6, 1)
        client.bgrewriteaof()
        _wait(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 600)
    started = time.perf_counter()
    with redis_server(folder) as (url, _):
        out["redis_aof_reload_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        RedisFeatureEngine.from_url(url).process(*_events(1, 1, 1, T0 + 1e6)[0])
        out["redis_worker_first_answer_s"] = round(time.perf_counter() - started, 3)
    return out


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["redis_costs"] = redis_costs(Path(tmp))
        results["restart_400k_cards"] = restart_times(Path(tmp))
        results["http"] = http_rounds(Path(tmp))
    save_results("state_stores", results)
    print(f"state stores: {json.dumps(results)}")


if __name__ == "__main__":
    main()
