"""Prometheus metrics of one service instance (its own registry, so apps in tests are isolated).

The per-event counters and the request-latency histogram are plain Python numbers exported
by a custom collector at scrape time: prometheus_client's `Counter.inc` and
`Histogram.observe` take a lock and cost ~1 µs each, which on the scoring route is several
percent of a request. Everything that updates them runs on the event-loop thread, and so
does `/metrics`, so no lock is needed.

The online state's size and evictions are read from the engine when `/metrics` is scraped
(`StateCollector.update`), not counted per event; so are the breaker's state and transitions.

Names follow Prometheus's conventions: counters end in `_total`, durations are
`_duration_seconds`, and the process (`process_*`), interpreter (`python_info`) and garbage
collector (`python_gc_*`) are exported by prometheus_client's own collectors.
"""

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from serving.breaker import BreakerState, CircuitBreaker
from serving.canary import STOP_REASONS, Canary
from serving.feature_engine import STATE_TABLES

SCORERS = ("champion", "heuristic", "challenger")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.06, 0.1, 0.25, 0.5, 1.0)
SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class _Histogram:
    """Prometheus's `le` buckets (a value equal to a bound falls in that bound's bucket)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += count
            out.append((bound, cumulative))
        return out


class HotPathCounters(Collector):
    """Decisions, who answered, what happened to the state, shadow disagreements and
    failures, the scores, and requests: their count by route and status, and latency."""

    def __init__(self) -> None:
        self.decisions: Tally[str] = Tally()
        self.scored_by: Tally[str] = Tally()
        self.state_updates: Tally[str] = Tally()  # added, duplicate, too_late, stateless
        self.decided_by: Tally[str] = Tally()  # champion, challenger (its canary share)
        self.failure_policy: Tally[tuple[str, str]] = Tally()  # (policy, cause)
        self.shadow_disagreements = 0
        self.shadow_failures = 0
        self.ejections = 0  # champions taken out of service for non-probability answers
        self.replays = 0  # retries answered with their stored answer
        self.conflicts = 0  # calls refused: a transaction id reused with another body
        self.answers_not_kept = 0  # answers the shared store failed to keep for retries
        self.latency: dict[str, _Histogram] = {}
        self.requests: Tally[tuple[str, int]] = Tally()  # (route, status code)
        # Who gave the score: the champion's model, the heuristic, the challenger (shadow).
        self.scores = {name: _Histogram(SCORE_BUCKETS) for name in SCORERS}

    def count_outcome(self, answer: Mapping[str, Any], shadow_disagrees: bool, state: str) -> None:
        """One fresh answer (`ScoreResponse`'s fields)."""
        scored_by, decided_by = answer["scored_by"], answer["decided_by"]
        self.decisions[answer["decision"]] += 1
        self.scored_by[scored_by] += 1
        self.decided_by[decided_by] += 1
        self.state_updates[state] += 1
        if shadow_disagrees:
            self.shadow_disagreements += 1
        policy = answer.get("failure_policy")
        if policy is not None:
            self.failure_policy[policy, answer["failure_cause"]] += 1
        scorer = "heuristic" if scored_by == "heuristic" else decided_by
        self.scores[scorer].observe(answer["fraud_probability"])
        shadow_score = answer.get("shadow_fraud_probability")
        if shadow_score is not None:
            self.scores["challenger"].observe(shadow_score)

    def count_replay(self) -> None:
        """A retry answered with its stored answer: the decision is not counted again."""
        self.replays += 1
        self.state_updates["duplicate"] += 1

    def count_refusal(self, route: str, status: int) -> None:
        """A request the access gate refused (401, 403, 429): counted, but kept out of the
        latency histogram, where a flood of instant refusals would flatter the SLO."""
        self.requests[route, status] += 1

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[route, status] += 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily("sentinel_decisions", "Decisions", labels=["decision"])
        for decision, n in sorted(self.decisions.items()):
            decisions.add_metric([decision], n)
        scored_by = CounterMetricFamily("sentinel_scored_by", "Who answered", labels=["scored_by"])
        for who, n in sorted(self.scored_by.items()):
            scored_by.add_metric([who], n)
        states = CounterMetricFamily(
            "sentinel_state_updates", "What each scored event did to the online state",
            labels=["state"],
        )  # fmt: skip
        for state, n in sorted(self.state_updates.items()):
            states.add_metric([state], n)
        decided_by = CounterMetricFamily(
            "sentinel_decided_by", "Decisions by the model that made them (challenger: its "
            "canary share)", labels=["model"],
        )  # fmt: skip
        for model, n in sorted(self.decided_by.items()):
            decided_by.add_metric([model], n)
        policy = CounterMetricFamily(
            "sentinel_failure_policy", "Answers given by SENTINEL_FAILURE_POLICY because the "
            "model could not answer, by policy and cause (breaker_open, model_error, no_model)",
            labels=["policy", "cause"],
        )  # fmt: skip
        for (name, cause), n in sorted(self.failure_policy.items()):
            policy.add_metric([name, cause], n)
        latency = HistogramMetricFamily(
            "sentinel_request_duration_seconds", "Time to answer a request, by route",
            labels=["route"],
        )  # fmt: skip
        for route, histogram in sorted(self.latency.items()):
            latency.add_metric([route], histogram.buckets(), histogram.total)
        requests = CounterMetricFamily(
            "sentinel_requests", "HTTP requests answered, by route and status code",
            labels=["route", "status"],
        )  # fmt: skip
        for (route, status), n in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], n)
        scores = HistogramMetricFamily(
            "sentinel_score", "Fraud probabilities given, by who gave them (champion: its "
            "model; heuristic: the fallback; challenger: in shadow or for its canary cards)",
            labels=["scorer"],
        )  # fmt: skip
        for scorer, histogram in self.scores.items():
            scores.add_metric([scorer], histogram.buckets(), histogram.total)
        yield decisions
        yield scored_by
        yield states
        yield decided_by
        yield policy
        yield latency
        yield requests
        yield scores
        counters = (
            ("sentinel_shadow_disagreements", "Champion and challenger decided differently",
             self.shadow_disagreements),
            ("sentinel_shadow_failures", "Challenger calls that failed or gave no probability",
             self.shadow_failures),
            ("sentinel_model_ejections", "Champions taken out of service for answering NaN, "
             "infinity or a score outside [0, 1]", self.ejections),
            ("sentinel_idempotent_replays", "Retries (same transaction_id and body) answered "
             "with the stored answer", self.replays),
            ("sentinel_idempotency_conflicts", "Calls refused with 409: a transaction_id "
             "reused with another body", self.conflicts),
            ("sentinel_answers_not_kept", "Answers the shared state store failed to keep for "
             "retries (such a retry is scored again)", self.answers_not_kept),
        )  # fmt: skip
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)


class StateCollector(Collector):
    """The online state's entries per table and evictions per table and reason, as of the
    last `update` (the `/metrics` route passes `FeatureEngine.state_stats()` before each
    scrape)."""

    def __init__(self) -> None:
        self.stats: Mapping[str, Any] = {}

    def update(self, stats: Mapping[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        entries = GaugeMetricFamily(
            "sentinel_state_entries", "Keys held per online-state table", labels=["table"]
        )
        for key, table in STATE_TABLES.items():
            if key in self.stats:
                entries.add_metric([table], self.stats[key])
        evicted = CounterMetricFamily(
            "sentinel_state_evicted", "Keys evicted per table and reason (cap: over the "
            "table's limit, least recently used; idle: beyond every window)",
            labels=["table", "reason"],
        )  # fmt: skip
        for table, reasons in sorted(self.stats.get("evicted", {}).items()):
            for reason, n in sorted(reasons.items()):
                evicted.add_metric([table, reason], n)
        yield entries
        yield evicted


class BreakerCollector(Collector):
    """A deadline breaker's state (1 for the current one) and its transitions so far, read
    from the breaker at each scrape: `sentinel_breaker_*` for the champion's,
    `sentinel_challenger_breaker_*` for the challenger's."""

    def __init__(self, breaker: CircuitBreaker, prefix: str = "sentinel_breaker") -> None:
        self.breaker = breaker
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            f"{self.prefix}_state", f"1 for the {self.breaker.model} breaker's current state",
            labels=["state"],
        )  # fmt: skip
        current = str(self.breaker.state)
        for name in BreakerState:
            state.add_metric([name], 1.0 if name == current else 0.0)
        transitions = CounterMetricFamily(
            f"{self.prefix}_transitions", f"The {self.breaker.model} breaker's transitions "
            "(from_to)", labels=["transition"],
        )  # fmt: skip
        for transition, n in sorted(self.breaker.transitions.items()):
            transitions.add_metric([transition], n)
        yield state
        yield transitions


class CanaryCollector(Collector):
    """The canary's share in force, whether it is stopped, and its stops by reason."""

    def __init__(self, canary: Canary) -> None:
        self.canary = canary

    def collect(self) -> Iterator[Metric]:
        status = self.canary.status()
        yield GaugeMetricFamily(
            "sentinel_canary_share", "Share of cards the challenger decides now (0 when "
            "stopped or without a challenger)", value=status["share"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "sentinel_canary_stopped", "1 when the canary was stopped for the loaded challenger",
            value=1.0 if status["stopped"] else 0.0,
        )  # fmt: skip
        stops = CounterMetricFamily(
            "sentinel_canary_stops", "Automatic canary stops by reason (breaker_open, "
            "decline_rate) made by this process", labels=["reason"],
        )  # fmt: skip
        for reason in STOP_REASONS:
            stops.add_metric([reason], self.canary.stop_counts.get(reason, 0))
        yield stops


class ServiceMetrics:
    def __init__(
        self,
        breaker: CircuitBreaker,
        challenger_breaker: CircuitBreaker | None = None,
        canary: Canary | None = None,
        extra: tuple[Collector, ...] = (),
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hot = HotPathCounters()
        r.register(self.hot)
        self.state = StateCollector()
        r.register(self.state)
        r.register(BreakerCollector(breaker))
        if challenger_breaker is not None:
            r.register(BreakerCollector(challenger_breaker, "sentinel_challenger_breaker"))
        if canary is not None:
            r.register(CanaryCollector(canary))
        for collector in extra:
            r.register(collector)
        ProcessCollector(registry=r)  # CPU seconds, resident memory, open descriptors
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # collections per generation
        self.reloads = Counter("sentinel_reloads", "Bundle loads", ["outcome"], registry=r)
        self.model_info = Info("sentinel_model", "Loaded model versions", registry=r)
        self.feedback = Counter("sentinel_feedback", "Labels received", ["outcome"], registry=r)
