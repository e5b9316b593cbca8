"""Before and after a change, on the shipped command: `sentinel serve` from two checkouts
(this one and another, e.g. a `git worktree` of the commit before), in memory and on Redis,
scoring raw events with wrk in alternating rounds, so both see the same machine load.

Run:
    git worktree add /tmp/before HEAD~1
    .venv/bin/python -m benchmarks.before_after /tmp/before --rounds 5

`--stores redis` (or `memory`) serves only that store's pair; `--after DIR` serves another
checkout as "after" (default: this one).

Each server runs the checkout's own code (`PYTHONPATH`) with this checkout's virtualenv; the
Redis servers share one redis-server, each under its own key prefix.
"""

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

from benchmarks.http.run import publish_models, wrk
from benchmarks.state_stores import ROOT, redis_server, sentinel_serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stores", choices=["both", "memory", "redis"], default="both")
    parser.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    memory, redis = args.stores in ("both", "memory"), args.stores in ("both", "redis")
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server(Path(tmp) / "redis"))[0] if redis else ""
        targets = {}
        for name, tree in trees.items():
            home = Path(tmp) / name
            publish_models(home)
            code = {"PYTHONPATH": str(tree)}
            if memory:
                targets[f"{name}, in memory"] = stack.enter_context(sentinel_serve(home, 1, **code))
            if redis:
                targets[f"{name}, redis"] = stack.enter_context(
                    sentinel_serve(
                        home, 1, SENTINEL_REDIS_URL=url, SENTINEL_REDIS_PREFIX=f"{name}:", **code
                    )
                )
        for round_ in range(args.rounds):
            # Every other round in reverse, so neither side always runs right after a Redis
            # round or first (measured: the position alone moves a server by ~10%).
            order = list(targets.items())
            for name, target in order if round_ % 2 == 0 else reversed(order):
                runs.setdefault(name, []).append(wrk(f"{target}/v1/score", "raw_event.lua"))
    print("| server | req/s | p50 ms | p99 ms | req/s, after / before (median of rounds) |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        rps, p50, p99 = (
            statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms")
        )
        store = name.split(", ")[1]
        ratios = [
            a["rps"] / b["rps"]
            for a, b in zip(runs[f"after, {store}"], runs[f"before, {store}"], strict=True)
        ]
        ratio = f"{statistics.median(ratios):.3f}" if name.startswith("after") else ""
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} |")
    for store in dict.fromkeys(name.split(", ")[1] for name in runs):
        after, before = runs[f"after, {store}"], runs[f"before, {store}"]
        each = ", ".join(f"{a['rps'] / b['rps']:.3f}" for a, b in zip(after, before, strict=True))
        print(f"{store}, after / before per round: {each}")


if __name__ == "__main__":
    main()
