"""Random event logs with what makes a partitioned replay hard: repeated transaction ids
(retries, and ids reused with another card or merchant, or much later), labels late, at an
event's exact time or never, repeated fraud labels, one busy merchant, cards with one
event, gaps that expire state, optional fields missing, rows out of order."""

import numpy as np
import pandas as pd

DAY = 86_400.0
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def random_log(seed: int, n: int = 3_000, int_ids: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = rng.uniform(0, 900, n)
    gaps = rng.random(n)
    steps[gaps < 0.08] = 0.0  # ties with the previous event
    steps[gaps < 0.02] = rng.choice([8 * DAY, 40 * DAY], int((gaps < 0.02).sum()))
    times = np.cumsum(steps)
    card = np.array([f"c{k}" for k in rng.integers(0, 60, n)], dtype=object)
    lonely = rng.random(n) < 0.05
    card[lonely] = [f"one{i}" for i in np.flatnonzero(lonely)]
    merchant = np.array([f"m{k}" for k in rng.integers(0, 40, n)], dtype=object)
    merchant[rng.random(n) < 0.3] = "busy"
    ids = np.array([f"t{i:05d}" for i in range(n)], dtype=object)
    fraud = rng.random(n) < 0.15
    for i in range(1, n):
        if rng.random() < 0.08:  # an id again: mostly a recent one, sometimes an old one
            j = int(rng.integers(max(0, i - 30), i) if rng.random() < 0.7 else rng.integers(0, i))
            ids[i] = ids[j]
            if rng.random() < 0.5:  # a retry: same time and card (the merchant may differ)
                times[i], card[i] = times[j], card[j]
            fraud[i] |= fraud[j] and rng.random() < 0.7  # labelled again
    delay = rng.choice([0.0, 60.0, 3_600.0, 5 * DAY, 45 * DAY, np.nan], n)
    label = times + delay
    at_event = rng.integers(0, n, n // 60)  # labels stamped at another event's exact time
    label[at_event] = np.maximum(times[rng.integers(0, n, len(at_event))], times[at_event])
    located = rng.random(n) < 0.8

    def stamp(seconds: np.ndarray) -> pd.Series:
        micros = pd.array(np.where(np.isnan(seconds), np.nan, START_US + seconds * 1e6))
        return pd.to_datetime(micros.astype("Int64"), unit="us", utc=True).as_unit("us")

    frame = pd.DataFrame(
        {
            "transaction_id": [int(x[1:]) for x in ids] if int_ids else ids,
            "event_time": stamp(times),
            "card_id": card,
            "merchant_id": merchant,
            "amount": np.round(rng.uniform(0, 500, n), 2),
            "channel": rng.choice(np.array(["online", "pos", "atm", None], dtype=object), n),
            "device_id": rng.choice(np.array(["d1", "d2", "d3", None], dtype=object), n),
            "lat": np.where(located, rng.uniform(-89, 89, n), np.nan),
            "lon": np.where(located, rng.uniform(-179, 179, n), np.nan),
            "merchant_category": rng.choice(
                np.array(["grocery", "travel", "unheard-of", None], dtype=object), n
            ),
            "is_fraud": fraud.astype("int8"),
            "label_time": stamp(label),
        }
    )
    return frame.sample(frac=1.0, random_state=seed, ignore_index=True)  # out of order
