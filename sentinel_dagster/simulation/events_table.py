"""A batch of simulated events as parallel numpy arrays, and its conversion to Arrow.

The simulator works on integer codes (card number, merchant number, channel code); names
and strings are only made once, when the final table is built.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from sentinel_dagster.simulation.world import CATEGORY_NAMES, CHANNEL_NAMES, CURRENCIES, Merchants
from serving.events import SCENARIOS  # the `fraud_scenario` values: the event schema's

NO_DEVICE = -1
NO_LABEL = -1


@dataclass(frozen=True)
class Events:
    card: np.ndarray  # int64 card number
    time: np.ndarray  # int64 epoch seconds
    merchant: np.ndarray  # int64 merchant number
    amount: np.ndarray  # float64
    channel: np.ndarray  # int8 index into CHANNEL_NAMES
    device: np.ndarray  # int64 device number, NO_DEVICE when none
    lat: np.ndarray  # float64, NaN when unknown
    lon: np.ndarray
    currency: np.ndarray  # int8 index into CURRENCIES
    scenario: np.ndarray  # int8: 0 legitimate, i + 1 for SCENARIOS[i]
    label_time: np.ndarray  # int64 epoch seconds, NO_LABEL when never reported

    def __len__(self) -> int:
        return len(self.card)

    @staticmethod
    def concat(parts: Sequence["Events"]) -> "Events":
        return Events(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Events)}
        )

    def take(self, index: np.ndarray) -> "Events":
        return Events(**{f.name: getattr(self, f.name)[index] for f in fields(Events)})


def _names(prefix: str, count: int, width: int) -> pa.Array:
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(count)], type=pa.string())


def _lookup(dictionary: pa.Array, codes: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """Strings for integer codes, via a dictionary array so a million rows cost one cast."""
    indices = pa.array(codes.astype(np.int32), mask=missing)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def _timestamps(seconds: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    micros = pa.array(seconds.astype(np.int64) * 1_000_000, mask=missing)
    return micros.cast(pa.timestamp("us", tz="UTC"))


def _coordinates(degrees: np.ndarray) -> pa.Array:
    return pa.array(np.round(degrees, 5), type=pa.float64(), mask=np.isnan(degrees))


def to_arrow(events: Events, merchants: Merchants, n_cards: int, n_devices: int) -> pa.Table:
    """The event-schema table (DESIGN.md §3), rows in the order given."""
    n = len(events)
    no_device = events.device == NO_DEVICE
    no_label = events.label_time == NO_LABEL
    legit = events.scenario == 0
    scenario_codes = np.maximum(events.scenario.astype(np.int32) - 1, 0)
    ids = pa.array([f"tx{i:09d}" for i in range(n)], type=pa.string())
    return pa.table(
        {
            "transaction_id": ids,
            "event_time": _timestamps(events.time),
            "card_id": _lookup(_names("card", n_cards, 7), events.card),
            "merchant_id": _lookup(_names("m", len(merchants), 6), events.merchant),
            "amount": pa.array(events.amount, type=pa.float64()),
            "merchant_category": _lookup(
                pa.array(CATEGORY_NAMES), merchants.category[events.merchant]
            ),
            "currency": _lookup(pa.array(CURRENCIES), events.currency),
            "channel": _lookup(pa.array(CHANNEL_NAMES), events.channel),
            "device_id": _lookup(
                _names("dev", n_devices, 8), np.where(no_device, 0, events.device), no_device
            ),
            "lat": _coordinates(events.lat),
            "lon": _coordinates(events.lon),
            "is_fraud": pa.array((~legit).astype(np.int8)),
            "label_time": _timestamps(np.where(no_label, 0, events.label_time), no_label),
            "fraud_scenario": _lookup(pa.array(SCENARIOS), scenario_codes, legit),
        }
    )
