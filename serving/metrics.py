"""Prometheus metrics of one service instance (its own registry, so apps in tests are isolated).

The per-event counters and the request-latency histogram are plain Python numbers exported
by a custom collector at scrape time: prometheus_client's `Counter.inc` and
`Histogram.observe` take a lock and cost ~1 µs each, which on the scoring route is several
percent of a request. Everything that updates them runs on the event-loop thread, and so
does `/metrics`, so no lock is needed.

The online state's size and evictions are read from the engine when `/metrics` is scraped
(`StateCollector.update`), not counted per event.
"""

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from serving.feature_engine import STATE_TABLES

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.06, 0.1, 0.25, 0.5, 1.0)


class _LatencyHistogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            cumulative += count
            out.append((bound, cumulative))
        return out


class HotPathCounters(Collector):
    """Decisions, who answered, what happened to the state, shadow disagreements and
    failures, and request latency."""

    def __init__(self) -> None:
        self.decisions: Tally[str] = Tally()
        self.scored_by: Tally[str] = Tally()
        self.state_updates: Tally[str] = Tally()  # added, duplicate, too_late, stateless
        self.shadow_disagreements = 0
        self.shadow_failures = 0
        self.ejections = 0  # champions taken out of service for non-probability answers
        self.replays = 0  # retries answered with their stored answer
        self.conflicts = 0  # calls refused: a transaction id reused with another body
        self.answers_not_kept = 0  # answers the shared store failed to keep for retries
        self.latency: dict[str, _LatencyHistogram] = {}

    def count_outcome(
        self, decision: str, scored_by: str, shadow_disagrees: bool, state: str
    ) -> None:
        self.decisions[decision] += 1
        self.scored_by[scored_by] += 1
        self.state_updates[state] += 1
        if shadow_disagrees:
            self.shadow_disagreements += 1

    def count_replay(self) -> None:
        """A retry answered with its stored answer: the decision is not counted again."""
        self.replays += 1
        self.state_updates["duplicate"] += 1

    def observe_latency(self, route: str, seconds: float) -> None:
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = _LatencyHistogram()
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
        latency = HistogramMetricFamily(
            "sentinel_request_seconds", "Request latency", labels=["route"]
        )
        for route, histogram in sorted(self.latency.items()):
            latency.add_metric([route], histogram.buckets(), histogram.total)
        yield decisions
        yield scored_by
        yield states
        yield latency
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


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hot = HotPathCounters()
        r.register(self.hot)
        self.state = StateCollector()
        r.register(self.state)
        self.breaker_state = Gauge(
            "sentinel_breaker_state", "1 for the current state", ["state"], registry=r
        )
        self.breaker_transitions = Gauge(
            "sentinel_breaker_transitions", "Breaker transitions so far", ["transition"], registry=r
        )
        self.reloads = Counter("sentinel_reloads", "Bundle loads", ["outcome"], registry=r)
        self.model_info = Info("sentinel_model", "Loaded model versions", registry=r)
        self.feedback = Counter("sentinel_feedback", "Labels received", ["outcome"], registry=r)
