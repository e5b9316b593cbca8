"""Prometheus metrics of one service instance (its own registry, so apps in tests are isolated)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.06, 0.1, 0.25, 0.5, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "sentinel_request_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.decisions = Counter("sentinel_decisions", "Decisions", ["decision"], registry=r)
        self.scored_by = Counter("sentinel_scored_by", "Who answered", ["scored_by"], registry=r)
        self.breaker_state = Gauge(
            "sentinel_breaker_state", "1 for the current state", ["state"], registry=r
        )
        self.breaker_transitions = Gauge(
            "sentinel_breaker_transitions", "Breaker transitions so far", ["transition"], registry=r
        )
        self.reloads = Counter("sentinel_reloads", "Bundle loads", ["outcome"], registry=r)
        self.model_info = Info("sentinel_model", "Loaded model versions", registry=r)
        self.shadow_disagreements = Counter(
            "sentinel_shadow_disagreements", "Champion and challenger decided differently",
            registry=r,
        )  # fmt: skip
        self.shadow_errors = Counter("sentinel_shadow_errors", "Challenger failures", registry=r)
        self.feedback = Counter("sentinel_feedback", "Labels received", ["outcome"], registry=r)
