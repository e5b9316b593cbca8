"""HTTP benchmarks with wrk against real servers on 127.0.0.1 (one worker each): the
scoring service started as it ships (`sentinel serve`, its defaults) and a trivial FastAPI
endpoint under uvicorn as the reference.

Rounds alternate the trivial reference endpoint and the measured one, so each ratio is taken
in the same minute on this noisy machine; medians over rounds are reported.
Needs `wrk` (Debian package). Run: `.venv/bin/python -m benchmarks.http.run`.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from benchmarks.results import save_results
from sentinel_dagster.core.policy import load_policy
from sentinel_dagster.features.feature_replay import replay
from sentinel_dagster.governance.publishing import BundleContent, ProfileContent, publish
from sentinel_dagster.simulation.simulator import SimulationParams, simulate_events
from sentinel_dagster.training.bundle_models import train_and_compile
from sentinel_dagster.training.training_data import split_out_of_time
from sentinel_dagster.training.xgboost_candidate import TrainParams
from serving.registry import Registry

HERE = Path(__file__).resolve().parent
TRIVIAL = "benchmarks.http.trivial_app:app"
ROUNDS = 5
SECONDS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish_models(home: Path) -> None:
    """A champion and a challenger trained on simulated data, as the lineage would publish
    them: the full model and the policy's request profiles' (precomputed-7)."""
    table = replay(simulate_events(SimulationParams(cards=2_000, days=35, seed=21)).to_pandas())
    split = split_out_of_time(table.table)
    registry = Registry(home / "registry")
    for seed in (7, 8):
        params = TrainParams(seed=seed, num_boost_round=150)
        full = train_and_compile(split, params)
        profiles = [train_and_compile(split, params, p) for p in load_policy().profiles()]
        content = BundleContent(
            model_json=bytes(full.trained.booster.save_raw("json")),
            model_onnx=full.onnx,
            threshold=full.threshold,
            metrics={},
            data_fingerprint="bench",
            code_version="bench",
            mlflow_run_id=f"bench{seed:04d}run",
            mlflow_model_version=None,
            lineage={},
            card_fields={},
            profiles=tuple(
                ProfileContent(
                    m.profile.name, m.profile.features, bytes(m.trained.booster.save_raw("json")),
                    m.onnx, m.threshold, {}, m.parity_max_abs_diff,
                )
                for m in profiles
            ),
            proof={"full": full.proof} | {m.profile.name: m.proof for m in profiles},
        )  # fmt: skip
        publish(registry, content)
        time.sleep(1.1)  # versions are named by the second


@contextmanager
def server(app: str, env: dict[str, str]):
    """The scoring service as it ships (`sentinel serve`: what `make run` starts too), or
    the trivial reference app under uvicorn with the same defaults (no access log)."""
    port = _free_port()
    if app == "uvicorn-text-log":  # what `sentinel serve` ran before: uvicorn's access log
        command = [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "info"]  # fmt: skip
    elif app == "serving.app:app":
        command = [str(Path(sys.executable).parent / "sentinel"), "serve", "--host",
                   "127.0.0.1", "--port", str(port)]  # fmt: skip
    else:
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port",
                   str(port), "--no-access-log", "--app-dir", str(HERE.parent.parent)]  # fmt: skip
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def wrk(
    url: str, script: str | None = None, connections: int = 16, token: str | None = None
) -> dict[str, float]:
    """`token`: an API key raw_event.lua sends as a bearer token."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{SECONDS}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(HERE / script)]
    env = {**os.environ, "SENTINEL_BENCH_TOKEN": token or ""}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rate,
        "p50_ms": pct("50%"),
        "p99_ms": pct("99%"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def simulated_stream(batches: int, size: int) -> list[bytes]:
    """Batch bodies cut from a simulated stream in event-time order, as a replay sends."""
    fields = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "device_id",
              "merchant_category", "lat", "lon", "event_time"]  # fmt: skip
    table = simulate_events(SimulationParams(cards=5_000, days=10, seed=99)).select(fields)
    events = [
        {k: (v.isoformat() if k == "event_time" else v) for k, v in row.items() if v is not None}
        for row in table.slice(0, batches * size).to_pylist()
    ]
    return [
        json.dumps({"events": events[i : i + size]}).encode() for i in range(0, len(events), size)
    ]


def batch_events_per_second(url: str, bodies: list[bytes], size: int, warm_up: int) -> float:
    """POST the batches in order, one at a time on one connection; the median events/s
    after the first `warm_up` batches (which create most cards' state)."""
    rates = []
    for body in bodies:
        request = urllib.request.Request(
            f"{url}/v1/score/batch", data=body, headers={"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        rates.append(size / (time.perf_counter() - started))
    return round(statistics.median(rates[warm_up:]))


def access_log_rounds(home: Path) -> dict[str, object]:
    """Raw-event scoring as a ratio to the trivial endpoint, round by round (each round in
    the opposite order to the one before): the shipped default (no access log), the opt-in
    JSON access log on every request, and uvicorn's text access log (the former default)."""
    env = {"SENTINEL_HOME": str(home)}
    variants = {
        "shipped, no access log": ("serving.app:app", env),
        "SENTINEL_ACCESS_LOG=on": ("serving.app:app", {**env, "SENTINEL_ACCESS_LOG": "on"}),
        "uvicorn text access log": ("uvicorn-text-log", env),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ("trivial", *variants)}
    with contextlib.ExitStack() as stack:
        urls = {"trivial": f"{stack.enter_context(server(TRIVIAL, {}))}/trivial"}
        for name, (app, app_env) in variants.items():
            urls[name] = f"{stack.enter_context(server(app, app_env))}/v1/score"
        for round_ in range(ROUNDS):
            order = list(urls.items())
            for name, url in order if round_ % 2 == 0 else reversed(order):
                runs[name].append(wrk(url, None if name == "trivial" else "raw_event.lua"))
    out: dict[str, object] = {}
    for name, results in runs.items():
        summary: dict[str, float] = {k: _median(results, k) for k in results[0]}
        if name != "trivial":
            pairs = zip(results, runs["trivial"], strict=True)
            summary["throughput_ratio"] = round(
                statistics.median(r["rps"] / t["rps"] for r, t in pairs), 3
            )
        out[name] = summary
    return out


def _median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        publish_models(home)
        bodies = simulated_stream(batches=60, size=1_000)
        env = {"SENTINEL_HOME": str(home)}
        with (
            server("benchmarks.http.trivial_app:app", {}) as trivial,
            server("serving.app:app", env) as service,
        ):
            ready = json.load(urllib.request.urlopen(f"{service}/v1/models"))
            assert ready["champion"] and ready["challenger"], ready
            seed_body = re.findall(r"'([^']*)'", (HERE / "seed.lua").read_text())
            probe = urllib.request.Request(
                f"{service}/v1/score", data="".join(seed_body).encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            answer = json.load(urllib.request.urlopen(probe))
            assert answer["profile"] == "precomputed-7", answer  # what seed.lua measures
            reference, scoring, seed = [], [], []
            for _ in range(ROUNDS):
                reference.append(wrk(f"{trivial}/trivial"))
                scoring.append(wrk(f"{service}/v1/score", "raw_event.lua"))
                seed.append(wrk(f"{service}/v1/score", "seed.lua"))
            models = json.load(urllib.request.urlopen(f"{service}/v1/models"))
            batching = models["batching"]
            results["rows_per_model_call"] = round(batching["rows"] / batching["model_calls"], 2)
        # A fresh service (same registry) for the batch run: the stream starts on no state.
        (home / "batch").mkdir()
        (home / "batch" / "registry").symlink_to(home / "registry")
        with server("serving.app:app", {**env, "SENTINEL_HOME": str(home / "batch")}) as service:
            rate = batch_events_per_second(service, bodies, 1_000, warm_up=20)
            results["batch_events_per_second"] = rate
        results["trivial"] = {k: _median(reference, k) for k in reference[0]}
        results["raw_event_score"] = {k: _median(scoring, k) for k in scoring[0]}
        results["seed_score"] = {k: _median(seed, k) for k in seed[0]}
        ratios = [s["rps"] / r["rps"] for s, r in zip(scoring, reference, strict=True)]
        p99 = [s["p99_ms"] / r["p99_ms"] for s, r in zip(scoring, reference, strict=True)]
        results["throughput_ratio"] = round(statistics.median(ratios), 3)
        results["p99_ratio"] = round(statistics.median(p99), 3)
        slow_env = {**env, "SENTINEL_INJECT_LATENCY_MS": "200"}
        with server("serving.app:app", slow_env) as slow:
            injected = [wrk(f"{slow}/v1/score", "seed.lua") for _ in range(ROUNDS)]
        results["injected_200ms"] = {k: _median(injected, k) for k in injected[0]}
        results["access_log"] = access_log_rounds(home)
    save_results("http", results)
    print(f"http: {json.dumps(results)}")


if __name__ == "__main__":
    main()
