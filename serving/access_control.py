"""Who may call which route, and how often: bearer API keys with scopes, and rate limits.

| route | needs |
|---|---|
| POST /v1/score, /v1/score/batch | a key with the `score` scope |
| POST /v1/feedback | `feedback` |
| GET /v1/models | any key |
| /admin/* | `admin` (or SENTINEL_ADMIN_TOKEN, as before keys existed) |
| /health, /ready, /metrics, the docs | nothing: probes and scrapers |

Authentication is on when SENTINEL_API_KEYS_FILE is set. Without it the service is meant
for loopback (`make run`): a request for a protected route that arrives on another address
is refused (403) unless SENTINEL_ALLOW_UNAUTHENTICATED says a gateway in front
authenticates; `sentinel serve` refuses to bind such an address at all.

Answers follow RFC 6750: 401 with `WWW-Authenticate: Bearer` for a missing or unknown
token, 403 for a known key without the route's scope. Rate limits are charged after
authentication, per key (per client address without authentication) and route.
"""

import ipaddress
import logging
import math
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.api_keys import ApiKey, KeyFileError, KeyRing
from serving.logs import log_event
from serving.rate_limits import Buckets, Rate

log = logging.getLogger("sentinel.serving.access")
ANY_KEY = "any"
SCOPE_OF = {
    "/v1/score": "score",
    "/v1/score/batch": "score",
    "/v1/feedback": "feedback",
    "/v1/models": ANY_KEY,
}
ADMIN_DISABLED = (
    "admin is disabled: set SENTINEL_API_KEYS_FILE with an admin key, or SENTINEL_ADMIN_TOKEN "
    "(at least 16 characters)"
)
NOT_ON_LOOPBACK = (
    "authentication is off and this request did not come over loopback: set "
    "SENTINEL_API_KEYS_FILE, or SENTINEL_ALLOW_UNAUTHENTICATED=true if a gateway in front "
    "authenticates"
)


def required_scope(path: str) -> str | None:
    """The scope `path` needs (`any`: any key), None for an open route."""
    scope = SCOPE_OF.get(path)
    if scope is None and path.startswith("/admin/"):
        return "admin"
    return scope


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def body(self) -> bytes:
        return orjson.dumps({"detail": self.detail})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: their key (None without authentication) and the rate-limit name."""

    key: ApiKey | None
    name: str


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name (tests' "testserver", a Unix socket): not a network address
        return True


class AccessControl:
    def __init__(
        self,
        keys: KeyRing,
        limits: dict[str, Rate],
        buckets: Buckets,
        allow_unauthenticated: bool = False,
    ) -> None:
        self.keys = keys
        self.limits = limits
        self.buckets = buckets
        self.allow_unauthenticated = allow_unauthenticated
        self.refused: Tally[tuple[str, str]] = Tally()  # (route, reason)
        self.limited: Tally[tuple[str, str]] = Tally()  # (route, key)
        self.limiter_errors = 0  # the shared buckets failed: the request was let through
        self._servers: dict[str, bool] = {}  # the address a request arrived at -> loopback

    def _refuse(self, path: str, reason: str, refusal: Refusal) -> tuple[Refusal, None]:
        route = path if path in SCOPE_OF else "/admin/*"  # any path may come: bounded labels
        self.refused[route, reason] += 1
        return refusal, None

    def authorize(
        self, scope: Mapping[str, Any], path: str
    ) -> tuple[Refusal | None, Caller | None]:
        """(refusal, None) or (None, the caller); (None, None) for an open route. `path`:
        the route's path (without a proxy's prefix: `access_log.route_path`)."""
        need = required_scope(path)
        if need is None:
            return None, None
        if need != "admin" and not self.keys.enabled:
            server = scope.get("server")
            host = str(server[0]) if server else ""
            local = self._servers.get(host)
            if local is None:
                local = self._servers[host] = not host or _loopback(host)
            if not local and not self.allow_unauthenticated:
                return self._refuse(path, "not_loopback", Refusal(403, NOT_ON_LOOPBACK))
            client = scope.get("client")
            return None, Caller(None, str(client[0]) if client else "unknown")
        if need == "admin" and not self.keys.by_hash and not self.keys.enabled:
            return self._refuse(path, "admin_disabled", Refusal(403, ADMIN_DISABLED))
        token = bearer_token(scope["headers"])
        if token is None:
            return self._refuse(path, "missing_token", Refusal(
                401, "missing bearer token: send Authorization: Bearer <API key>",
                ((b"www-authenticate", b"Bearer"),),
            ))  # fmt: skip
        key = self.keys.find(token)
        if key is None:
            return self._refuse(path, "invalid_token", Refusal(
                401, "invalid or revoked API key",
                ((b"www-authenticate", b'Bearer error="invalid_token"'),),
            ))  # fmt: skip
        if need != ANY_KEY and need not in key.scopes:
            return self._refuse(path, "missing_scope", Refusal(
                403, f"API key {key.name!r} lacks the {need!r} scope this route needs"
            ))  # fmt: skip
        return None, Caller(key, key.name)

    def charge(self, caller: Caller | None, route: str, cost: float = 1.0) -> Refusal | None:
        """Take `cost` tokens of the caller's bucket for `route`; a 429 if it cannot pay."""
        if caller is None:
            return None
        rate = caller.key.rate_limits.get(route) if caller.key is not None else None
        if rate is None:
            rate = self.limits.get(route)
            if rate is None:
                return None
        try:
            wait = self.buckets.take(f"{route}|{caller.name}", rate, cost)
        except Exception as exc:  # the shared buckets are down: limiting must not stop payments
            self.limiter_errors += 1
            log_event(log, logging.WARNING, "rate_limit_unavailable", error=type(exc).__name__)
            return None
        if wait <= 0.0:
            return None
        # by key name; without keys one label for all, not one per client address
        self.limited[route, caller.name if caller.key is not None else "unauthenticated"] += 1
        who = f"key {caller.name!r}" if caller.key is not None else f"client {caller.name}"
        if math.isinf(wait):
            return Refusal(429, f"{cost:g} events is more than the burst of {rate.burst:g} "
                           f"allowed to {who} on {route}: send smaller batches")  # fmt: skip
        retry = max(1, math.ceil(wait))
        return Refusal(
            429,
            f"rate limit of {rate.per_s:g}/s (burst {rate.burst:g}) for {who} on {route}: "
            f"retry in {retry} s",
            ((b"retry-after", str(retry).encode()),),
        )

    def tick(self) -> None:
        """The background tick: forget full buckets, pick up a changed keys file."""
        self.buckets.prune()
        self.reload_keys()

    def reload_keys(self) -> None:
        """Pick up a changed keys file; a broken one keeps the old keys and is logged (the
        error names the file and the entry)."""
        try:
            if self.keys.reload():
                log_event(log, logging.INFO, "api_keys_loaded", keys=len(self.keys.by_hash))
        except KeyFileError as exc:
            log_event(log, logging.ERROR, "api_keys_not_reloaded", reason=str(exc))


class AccessCollector(Collector):
    def __init__(self, control: AccessControl) -> None:
        self.control = control

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "sentinel_auth_refused", "Requests refused by authentication, by route and reason "
            "(missing_token, invalid_token, missing_scope, admin_disabled, not_loopback)",
            labels=["route", "reason"],
        )  # fmt: skip
        for (route, reason), n in sorted(self.control.refused.items()):
            refused.add_metric([route, reason], n)
        limited = CounterMetricFamily(
            "sentinel_rate_limited", "Requests answered 429, by route and key "
            "(unauthenticated without keys)", labels=["route", "key"],
        )  # fmt: skip
        for (route, key), n in sorted(self.control.limited.items()):
            limited.add_metric([route, key], n)
        yield refused
        yield limited
        yield CounterMetricFamily(
            "sentinel_rate_limiter_errors", "Requests let through unlimited because the "
            "shared rate-limit store failed", value=self.control.limiter_errors,
        )  # fmt: skip
