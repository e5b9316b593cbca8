"""Event times from JSON or Python values to UTC epoch seconds (no pandas on the hot path)."""

import datetime as dt
import math


def parse_event_time(value: object, field: str) -> float:
    """Epoch seconds from a number, a datetime or an ISO 8601 string (zone-less means UTC)."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a timestamp, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{field}: expected a finite epoch-seconds number, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{field}: not an ISO 8601 timestamp: {value!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    raise ValueError(f"{field}: expected a timestamp, got {type(value).__name__}")


def iso(t: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp, for messages (the number if out of range)."""
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{t!r} (epoch seconds)"
