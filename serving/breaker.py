"""A circuit breaker in the resilience4j style, counting slow or failed model calls.

closed → open when, over the last `window_size` calls (and at least `minimum_calls`), the
share of slow-or-failed calls reaches `failure_rate`; open → half-open after `open_wait_s`;
half-open lets `half_open_probes` calls through and closes when all of them succeed, or
opens again on the first bad one. While open, callers use the heuristic without calling the
model at all.

Hand-written (about 80 lines) because the Python breakers on PyPI (pybreaker, circuitbreaker)
count consecutive failures only, with no sliding-window rate, slow-call accounting or probe
budget — the parts that make a breaker useful for latency.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from serving.logs import log_event

log = logging.getLogger("sentinel.serving.breaker")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    window_size: int = 100
    minimum_calls: int = 20
    failure_rate: float = 0.5
    open_wait_s: float = 5.0
    half_open_probes: int = 5


class CircuitBreaker:
    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        model: str = "champion",  # whose calls it judges, for the log
    ) -> None:
        self.config = config or BreakerConfig()
        self.model = model
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._window: deque[bool] = deque(maxlen=self.config.window_size)  # True = bad call
        self._opened_at = 0.0
        self._probes_started = 0
        self._probes_passed = 0
        self.transitions: dict[str, int] = {}
        self.short_circuited = 0

    def _move(self, state: BreakerState) -> None:
        key = f"{self.state}->{state}"
        self.transitions[key] = self.transitions.get(key, 0) + 1
        log_event(log, logging.WARNING, "breaker_transition", model=self.model, transition=key)
        self.state = state
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif state is BreakerState.HALF_OPEN:
            self._probes_started = self._probes_passed = 0
        else:
            self._window.clear()

    def reset(self) -> None:
        """Closed, with an empty window: for a new model (not a transition of this one)."""
        self.state = BreakerState.CLOSED
        self._window.clear()
        self._probes_started = self._probes_passed = 0

    def allow(self) -> bool:
        """May the model be called now? (Counts a probe when half-open.)"""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.config.open_wait_s:
                self.short_circuited += 1
                return False
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probes_started >= self.config.half_open_probes:
                self.short_circuited += 1
                return False
            self._probes_started += 1
        return True

    def record(self, bad: bool) -> None:
        """The outcome of an allowed call: `bad` if it was slow or failed."""
        if self.state is BreakerState.HALF_OPEN:
            if bad:
                self._move(BreakerState.OPEN)
            else:
                self._probes_passed += 1
                if self._probes_passed >= self.config.half_open_probes:
                    self._move(BreakerState.CLOSED)
            return
        if self.state is BreakerState.OPEN:
            return  # a call that started before the breaker opened
        self._window.append(bad)
        window = self._window
        if (
            len(window) >= self.config.minimum_calls
            and sum(window) / len(window) >= self.config.failure_rate
        ):
            self._move(BreakerState.OPEN)
