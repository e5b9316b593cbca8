"""The simulator's parameters, apart from the simulator: the command line reads their
defaults without importing numpy, pandas and pyarrow (about a second)."""

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class SimulationParams:
    cards: int = 10_000
    days: int = 60
    seed: int = 7
    fraud_rate: float = 0.01
    start: str = "2026-01-01"  # UTC date of the first day; fixed so output is reproducible
    mean_daily_rate: float = 1.7  # payments per card per day; defaults give ~1M events
    # None: chargebacks arrive per incident after a realistic, skewed delay (median ~6 days,
    # up to 90). A number: every reported fraud's label arrives exactly this many days after
    # the payment, as in data sets with a fixed feedback delay.
    label_delay_days: float | None = None
    # None: only the four long-known fraud scenarios. A UTC date: from that day on, an
    # emerging attack (the fifth scenario, `atm_cash_out`) runs as well, taking its
    # share of the frauds, so data from before the date has never seen it. A date before
    # `start` means it has been running all along.
    emerging_from: str | None = None

    def validate(self) -> None:
        if self.cards < 1:
            raise ValueError(f"cards must be at least 1, got {self.cards}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if not 0.0 < self.fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in (0, 0.5), got {self.fraud_rate}")
        if self.mean_daily_rate <= 0:
            raise ValueError(f"mean_daily_rate must be positive, got {self.mean_daily_rate}")
        if self.label_delay_days is not None and not 0 <= self.label_delay_days <= 365:
            raise ValueError(f"label_delay_days must be in [0, 365], got {self.label_delay_days}")
        start = self.start_epoch()
        emerging = self.emerging_epoch()
        if emerging is not None and emerging >= start + self.days * _SECONDS_PER_DAY:
            # Refused rather than ignored: an attack that never starts is a mistyped date.
            last = dt.date.fromisoformat(self.start) + dt.timedelta(days=self.days - 1)
            raise ValueError(
                f"emerging_from {self.emerging_from} is after the simulated period "
                f"({self.start} to {last}): the emerging scenario would never run"
            )

    def start_epoch(self) -> int:
        return _epoch("start", self.start)

    def emerging_epoch(self) -> int | None:
        """Epoch seconds at which the emerging scenario starts; None when it is off."""
        return None if self.emerging_from is None else _epoch("emerging_from", self.emerging_from)


_SECONDS_PER_DAY = 86_400  # world.SECONDS_PER_DAY, not imported: world needs numpy


def _epoch(name: str, value: str) -> int:
    """Midnight UTC of `value`, a date like 2026-01-01; ValueError naming `name` otherwise."""
    try:
        day = dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a date like 2026-01-01, got {value!r}") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
