"""Circuit breaker state machine: closed -> open -> half-open -> closed (or open again)."""

from serving.breaker import BreakerConfig, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock) -> CircuitBreaker:
    config = BreakerConfig(window_size=10, minimum_calls=4, failure_rate=0.5, open_wait_s=5.0,
                           half_open_probes=2)  # fmt: skip
    return CircuitBreaker(config, clock)


def test_stays_closed_below_the_failure_rate_and_minimum_calls() -> None:
    b = breaker(FakeClock())
    for _ in range(3):  # all bad, but fewer than minimum_calls
        assert b.allow()
        b.record(True)
    assert b.state is BreakerState.CLOSED
    calm = breaker(FakeClock())
    for bad in (True, False, False, False, False, True, False):  # 2 of 7 bad
        calm.record(bad)
    assert calm.state is BreakerState.CLOSED


def test_opens_at_the_rate_then_short_circuits_until_the_wait_is_over() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for bad in (True, False, True, False):
        b.record(bad)
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.now = 4.9
    assert not b.allow()
    assert b.short_circuited == 2
    clock.now = 5.0
    assert b.allow()
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_closes_after_its_probes_succeed() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(4):
        b.record(True)
    clock.now = 10.0
    assert b.allow() and b.allow()
    assert not b.allow()  # only two probes at a time
    b.record(False)
    b.record(False)
    assert b.state is BreakerState.CLOSED
    assert b.transitions == {"closed->open": 1, "open->half_open": 1, "half_open->closed": 1}


def test_half_open_reopens_on_a_bad_probe() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(4):
        b.record(True)
    clock.now = 10.0
    assert b.allow()
    b.record(True)
    assert b.state is BreakerState.OPEN
    clock.now = 12.0
    assert not b.allow()  # a fresh wait started at the reopening
