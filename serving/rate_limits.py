"""Token-bucket rate limits per caller and route, in memory or shared through Redis.

A limit is written `RATE/UNIT[:BURST]`: `500/s`, `30000/min:1000`. The bucket holds at
most BURST tokens (one second's worth of RATE by default), refills at RATE, and a request
takes one token (a batch one per event). A request the bucket cannot pay for is refused
with 429 and `Retry-After`: the seconds until it could be paid for.

In memory each worker keeps its own buckets. With SENTINEL_REDIS_URL the buckets live in
Redis and every worker and host draws from the same one: a short Lua script, timed by
Redis's own clock so that hosts with skewed clocks agree, which hands a worker a small lease
of tokens at a time (see `RedisBuckets`).

Written by hand: the usual libraries (`limits`, behind slowapi) offer fixed and moving
windows but no token bucket, and the in-memory bucket here costs well under a microsecond
on the payment path (a dictionary lookup and a few float operations).
"""

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

LIMITED_ROUTES = ("/v1/score", "/v1/score/batch", "/v1/feedback")
UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
         "h": 3600.0, "hour": 3600.0}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*(?::\s*(\d+(?:\.\d+)?))?\s*$")


@dataclass(frozen=True)
class Rate:
    per_s: float
    burst: float

    def __str__(self) -> str:
        return f"{self.per_s:g}/s:{self.burst:g}"


def parse_rate(text: str) -> Rate:
    """`500/s`, `30000/min`, `500/s:2000` (burst 2000); ValueError says the form."""
    match = _RATE.match(text.lower())
    unit = UNITS.get(match.group(2)) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a rate such as 500/s, 30000/min or 500/s:2000")
    per_s = float(match.group(1)) / unit
    burst = float(match.group(3)) if match.group(3) else max(1.0, per_s)
    if per_s <= 0 or burst < 1:
        raise ValueError(f"{text!r}: the rate must be above 0 and the burst at least 1")
    return Rate(per_s, burst)


def parse_limits(text: str, routes: tuple[str, ...] = LIMITED_ROUTES) -> dict[str, Rate]:
    """SENTINEL_RATE_LIMITS: `route=rate` pairs separated by commas."""
    limits: dict[str, Rate] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        route, sep, rate = item.partition("=")
        route = route.strip()
        if not sep or route not in routes:
            raise ValueError(
                f"{item!r}: expected route=rate with a route among {', '.join(routes)}"
            )
        limits[route] = parse_rate(rate)
    return limits


class Buckets(Protocol):
    def take(self, key: str, rate: Rate, cost: float) -> float:
        """Take `cost` tokens; 0.0 if granted, else the seconds until they could be."""
        ...

    def prune(self) -> int:
        """Forget what is no longer needed (the background tick); how many entries."""
        ...


class MemoryBuckets:
    """This worker's buckets: key -> [tokens, last refill time, full again at]."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}

    def prune(self) -> int:
        """Forget the buckets that are full again (the background tick): without keys a
        bucket per client address would otherwise pile up. How many were dropped."""
        now = self.clock()
        full = [key for key, bucket in self._buckets.items() if bucket[2] <= now]
        for key in full:
            del self._buckets[key]
        return len(full)

    def take(self, key: str, rate: Rate, cost: float) -> float:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [rate.burst, now, now]
        tokens = min(rate.burst, bucket[0] + (now - bucket[1]) * rate.per_s)
        bucket[1] = now
        if tokens >= cost:
            bucket[0] = tokens - cost
            bucket[2] = now + (rate.burst - bucket[0]) / rate.per_s
            return 0.0
        bucket[0] = tokens
        return math.inf if cost > rate.burst else (cost - tokens) / rate.per_s


# KEYS[1]: the bucket; ARGV: rate per second, burst, tokens needed, tokens wanted. Takes
# between `need` and `want` tokens if at least `need` are there: returns {granted, wait}
# as strings (Lua numbers become integers on the way back); wait -1: never (need > burst).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local need, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted, wait = 0, 0
if tokens >= need then
  granted = math.min(tokens, want)
  tokens = tokens - granted
elseif need > burst then wait = -1
else wait = (need - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {tostring(granted), tostring(wait)}
"""
LEASE_S = 0.05  # a worker takes up to this much of a bucket's rate per round trip
LEASE_TTL_S = 1.0  # tokens held longer are dropped (never spent late)


class RedisBuckets:
    """Buckets every worker shares; a bucket expires once it would be full again.

    One round trip per request measured 28% of the throughput on Redis, so a worker takes a
    lease: up to `LEASE_S` worth of the rate (at most the burst) per round trip, spent
    locally until it runs out. Leases never add tokens: across workers no more is granted
    than the bucket holds; tokens one worker holds are missing to the others for at most
    `LEASE_TTL_S` (then dropped, not returned), which under-admits by at most one lease per
    worker. Small rates (under 1 / LEASE_S per second) are not leased at all."""

    def __init__(
        self, client: Any, prefix: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.prefix = prefix + "rate:"
        self.clock = clock
        self._script = client.register_script(_TAKE)
        self._leases: dict[str, list[float]] = {}  # key -> [tokens held, taken at]

    def take(self, key: str, rate: Rate, cost: float) -> float:
        if cost > rate.burst:  # never, whatever a lease still holds
            return math.inf
        now = self.clock()
        lease = self._leases.get(key)
        held = 0.0
        if lease is not None and now - lease[1] <= LEASE_TTL_S:
            if lease[0] >= cost:
                lease[0] -= cost
                return 0.0
            held = lease[0]
        need = cost - held
        want = max(need, min(rate.burst, rate.per_s * LEASE_S))
        granted, wait = self._script(
            keys=[self.prefix + key], args=[rate.per_s, rate.burst, need, want]
        )
        if float(granted) > 0:
            self._leases[key] = [held + float(granted) - cost, now]
            return 0.0
        return math.inf if float(wait) < 0 else float(wait)

    def prune(self) -> int:
        """Drop expired leases (Redis expires the buckets themselves)."""
        now = self.clock()
        old = [key for key, lease in self._leases.items() if now - lease[1] > LEASE_TTL_S]
        for key in old:
            del self._leases[key]
        return len(old)
