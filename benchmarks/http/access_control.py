"""What API keys and rate limits cost `/v1/score`: `sentinel serve` as shipped (no keys,
no limits) against the same service with them on, under wrk, round by round in alternating
order, each variant's throughput as a ratio to the shipped service's in the same round.

Variants: a bearer key checked on every request; the key and an in-memory token bucket per
key and route (a limit far above the load, so every request is charged and none refused);
and on the shared Redis state, the service without them against the key with the bucket in
Redis (one Lua script per request). The Redis pair is compared with each other: the state
store itself costs throughput (docs/BENCHMARKS.md, "Online state").

Run: `.venv/bin/python -m benchmarks.http.access_control` (part of `make bench`; needs wrk
and redis-server, which `make setup` installs).
"""

import contextlib
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.http.run import ROUNDS, publish_models, server, wrk
from benchmarks.results import save_results
from benchmarks.state_stores import redis_server
from serving.api_keys import create_key

NO_LIMIT = "/v1/score=1000000/s"  # charged on every request, never reached


def main() -> None:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        home = Path(tmp)
        publish_models(home)
        keys = home / "keys.json"
        token = create_key(keys, "bench", ["score"])
        url, _ = stack.enter_context(redis_server(home / "redis-data"))
        base = {"SENTINEL_HOME": str(home)}
        keyed = {"SENTINEL_API_KEYS_FILE": str(keys)}
        variants = {  # name: (environment, sends the key)
            "shipped": (base, False),
            "api_key": ({**base, **keyed}, True),
            "api_key_rate_limit": ({**base, **keyed, "SENTINEL_RATE_LIMITS": NO_LIMIT}, True),
            "redis": ({**base, "SENTINEL_REDIS_URL": url}, False),
            "redis_api_key_rate_limit": (
                {**base, **keyed, "SENTINEL_RATE_LIMITS": NO_LIMIT, "SENTINEL_REDIS_URL": url},
                True,
            ),
        }
        urls = {}
        for name, (env, _) in variants.items():
            # each its own home for the in-memory state's journal; one registry for all
            own = home / name
            own.mkdir()
            (own / "registry").symlink_to(home / "registry")
            env = {**env, "SENTINEL_HOME": str(own), "SENTINEL_REDIS_PREFIX": f"{name}:"}
            urls[name] = stack.enter_context(server("serving.app:app", env)) + "/v1/score"
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for round_ in range(ROUNDS):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                key = token if variants[name][1] else None
                runs[name].append(wrk(urls[name], "raw_event.lua", token=key))
    for name, rounds in runs.items():
        results[name] = {
            key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]
        }
    pairs = {"api_key": "shipped", "api_key_rate_limit": "shipped",
             "redis_api_key_rate_limit": "redis"}  # fmt: skip
    for name, reference in pairs.items():
        ratios = [a["rps"] / b["rps"] for a, b in zip(runs[name], runs[reference], strict=True)]
        results[name]["throughput_ratio_to_" + reference] = round(statistics.median(ratios), 3)  # type: ignore[index]
    save_results("access_control", results)
    print(f"access_control: {json.dumps(results)}")


if __name__ == "__main__":
    main()
