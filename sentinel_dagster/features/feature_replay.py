"""Offline features = replaying the event log through the serving engine (Kappa).

Transactions and label arrivals are merged by time — a label whose `label_time` equals an
event's time is applied first, since it was known at that moment — and fed one at a time
to `serving.feature_engine.FeatureEngine`, the code the scoring service runs.

A replay of one partition of the log (`partitioned_replay`) is told, through `SharedIds`,
the log's clock at its fraud labels and what the whole log's transaction-id tables hold
where its rows share ids with other partitions; the engine then decides from them exactly
as it would in one process.
"""

import gc
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from serving.feature_engine import EngineConfig, FeatureEngine

Progress = Callable[[int, int], None]  # (events done, events in all)
KEY_COLUMNS = ("transaction_id", "event_time", "card_id", "merchant_id")
LABEL_COLUMNS = ("is_fraud", "label_time", "fraud_scenario")
PROGRESS_EVERY = 50_000


TxnEntry = tuple[str, str, float]  # the engine's txn table: (card, merchant, event_time)
LabelEntry = tuple[float, float]  # its label table: (label_time, event_time)


@dataclass(frozen=True)
class SharedIds:
    """What the whole log's id tables hold just before some rows, keyed by the row's position
    in (event_time, transaction_id) order: `txns` before the row's event (None: no entry),
    `labels` before its label as (the log's clock then, the entry or None)."""

    txns: Mapping[int, TxnEntry | None]
    labels: Mapping[int, tuple[float, LabelEntry | None]]


@dataclass(frozen=True)
class ReplayResult:
    table: pd.DataFrame  # keys, the feature set's names in order, label columns in the input
    engine: FeatureEngine  # its state is the online state after the last event
    seconds: float


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """UTC epoch seconds as float64, rounded exactly as `datetime.timestamp()` does."""
    return times.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy() / 1e6


def in_replay_order(times: np.ndarray, ids: pd.Series) -> bool:
    """True when the rows are already in (event_time, transaction_id) order, as a log
    usually is: checked in milliseconds where sorting 1M rows by both keys takes 0.6 s."""
    steps = np.diff(times)
    if (steps < 0).any():
        return False
    ties = np.flatnonzero(steps == 0)  # only equal times need their ids compared
    if len(ties) == 0:
        return True
    values = ids.to_numpy()  # compared as the sort compares them (numbers as numbers)
    try:
        return all(values[i] <= values[i + 1] for i in ties)
    except TypeError:  # mixed types: let the sort decide
        return False


def _strings(frame: pd.DataFrame, column: str) -> list[str | None]:
    if column not in frame:
        return [None] * len(frame)
    values = frame[column]
    return values.astype(object).where(values.notna(), None).tolist()


def _floats(frame: pd.DataFrame, column: str) -> list[float]:
    if column not in frame:
        return [float("nan")] * len(frame)
    return frame[column].astype("float64").tolist()


def check_replayable(frame: pd.DataFrame) -> None:
    """The few invariants the engine relies on; ValueError naming the column otherwise."""
    for column in (*KEY_COLUMNS, "amount"):
        if column not in frame:
            raise ValueError(f"{column}: missing column")
        if frame[column].isna().any():
            raise ValueError(f"{column}: {int(frame[column].isna().sum())} null values")
    amount = frame["amount"].to_numpy(dtype="float64")
    if not (np.isfinite(amount) & (amount >= 0)).all():
        raise ValueError("amount: values must be finite and >= 0")


def _label_arrivals(frame: pd.DataFrame) -> pd.DataFrame:
    if "label_time" not in frame or "is_fraud" not in frame:
        return pd.DataFrame(columns=["at", "row"])
    known = frame["label_time"].notna().to_numpy()
    rows = np.flatnonzero(known)
    arrivals = pd.DataFrame(
        {
            "at": epoch_seconds(frame["label_time"].iloc[rows]),
            "id": frame["transaction_id"].iloc[rows].to_numpy(),
            "row": rows,
        }
    )
    return arrivals.sort_values(["at", "id"], kind="stable")


def replay(
    frame: pd.DataFrame,
    config: EngineConfig | None = None,
    progress: Progress | None = None,
    shared: SharedIds | None = None,
) -> ReplayResult:
    """The feature table of `frame`, one row per transaction, in (event_time, id) order.
    `shared` (positions in that order) is for a partition of a log (partitioned_replay)."""
    started = time.perf_counter()
    check_replayable(frame)
    times = epoch_seconds(frame["event_time"])
    if in_replay_order(times, frame["transaction_id"]):
        frame = frame.reset_index(drop=True)  # the table's rows line up with the vectors
    else:
        frame = frame.sort_values(
            ["event_time", "transaction_id"], kind="stable", ignore_index=True
        )
        times = epoch_seconds(frame["event_time"])
    ids = frame["transaction_id"].astype(str).tolist()
    cards = frame["card_id"].astype(str).tolist()
    merchants = frame["merchant_id"].astype(str).tolist()
    amounts = frame["amount"].astype("float64").tolist()
    channels = _strings(frame, "channel")
    devices = _strings(frame, "device_id")
    categories = _strings(frame, "merchant_category")
    lats, lons = _floats(frame, "lat"), _floats(frame, "lon")
    event_times = times.tolist()
    is_fraud = frame["is_fraud"].tolist() if "is_fraud" in frame else []

    arrivals = _label_arrivals(frame)
    label_at = arrivals["at"].tolist()
    label_row = arrivals["row"].tolist()
    n_labels = len(label_at)

    engine = FeatureEngine(config=config)
    names = list(engine.feature_names)
    n = len(frame)
    # The state is millions of long-lived objects without cycles: the cyclic collector would
    # walk them again and again as the replay allocates (~10% of its time, measured).
    collecting = gc.isenabled()
    gc.disable()
    try:
        if engine.compiled_process is not None:
            # One contiguous row per feature: the table's columns without a transposing copy.
            columns = np.empty((len(names), n))
            hooks = () if shared is None else _share_hooks(engine, ids, shared)
            j = engine.compiled_process.replay(
                ids, event_times, cards, merchants, amounts, channels, devices, lats, lons,
                categories, label_at, label_row, is_fraud, engine.apply_label, columns, progress,
                PROGRESS_EVERY, *hooks,
            )  # fmt: skip
        else:
            values, j = _replay_python(
                engine, ids, event_times, cards, merchants, amounts, channels, devices, lats,
                lons, categories, label_at, label_row, is_fraud, progress, shared,
            )  # fmt: skip
            columns = np.frombuffer(values, dtype="float64").reshape(n, len(names)).T
    finally:
        _age_into_oldest_generation()
        if collecting:
            gc.enable()
    apply_label = engine.apply_label
    while j < n_labels:  # labels after the last event still shape the final online state
        r = label_row[j]
        if shared is not None and r in shared.labels:
            _share_label(engine, ids[r], shared.labels[r])
        apply_label(ids[r], bool(is_fraud[r]), label_at[j], cards[r], merchants[r], event_times[r])
        j += 1
    if progress is not None:
        progress(n, n)

    # The features as one block over `columns` (no copy: a dict of columns would be
    # consolidated into a new 2-D block, 0.65 s and 300 MB for 1M rows), then the keys in
    # front and the labels behind.
    table = pd.DataFrame(columns.T, columns=names, copy=False)
    for position, column in enumerate(KEY_COLUMNS):
        table.insert(position, column, frame[column])
    for column in LABEL_COLUMNS:
        if column in frame:
            table[column] = frame[column]
    return ReplayResult(table=table, engine=engine, seconds=time.perf_counter() - started)


def _age_into_oldest_generation() -> None:
    """Move the objects made with the collector off (the engine's state) into its oldest
    generation without walking them: `freeze` then `unfreeze` splices the lists. Left
    young, the first collections after `gc.enable` walk every one of them (0.5 s per 1M
    events, measured). Skipped where the process froze objects of its own."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def _replay_python(
    engine: FeatureEngine,
    ids: list[str],
    event_times: list[float],
    cards: list[str],
    merchants: list[str],
    amounts: list[float],
    channels: list[str | None],
    devices: list[str | None],
    lats: list[float],
    lons: list[float],
    categories: list[str | None],
    label_at: list[float],
    label_row: list[int],
    is_fraud: list[Any],
    progress: Progress | None,
    shared: SharedIds | None = None,
) -> tuple[array, int]:
    """The reference loop (the compiled one is `InMemoryProcess.replay`): each label
    applied before the first event at or after its arrival; returns the vectors and how
    many labels were applied. With `shared`, the id tables are set as the whole log holds
    them before the rows it names."""
    process, apply_label = engine.process, engine.apply_label
    values = array("d")
    extend = values.extend
    n, n_labels = len(ids), len(label_at)
    shared_txns = shared.txns if shared is not None else {}
    shared_labels = shared.labels if shared is not None else {}
    j = 0
    for i in range(n):
        t = event_times[i]
        while j < n_labels and label_at[j] <= t:
            r = label_row[j]
            if r in shared_labels:
                _share_label(engine, ids[r], shared_labels[r])
            apply_label(
                ids[r], bool(is_fraud[r]), label_at[j], cards[r], merchants[r], event_times[r]
            )
            j += 1
        if i in shared_txns:
            _share_txn(engine, ids[i], shared_txns[i])
        extend(
            process(
                ids[i], t, cards[i], merchants[i], amounts[i],
                channels[i], devices[i], lats[i], lons[i], categories[i],
            )
        )  # fmt: skip
        if progress is not None and i % PROGRESS_EVERY == 0:
            progress(i, n)
    return values, j


def _share_hooks(engine: FeatureEngine, ids: list[str], shared: SharedIds) -> tuple:
    """The compiled loop's arguments for `shared`: which positions, and what to call."""
    return (
        dict(shared.txns),
        dict(shared.labels),
        lambda i: _share_txn(engine, ids[i], shared.txns[i]),
        lambda r: _share_label(engine, ids[r], shared.labels[r]),
    )


def _share_txn(engine: FeatureEngine, txn_id: str, entry: TxnEntry | None) -> None:
    """The txn table's entry for the id as the whole log has it before this event."""
    table = engine.store.table("txn")
    if entry is None:
        table.pop(txn_id, None)
    else:
        table[txn_id] = entry


def _share_label(
    engine: FeatureEngine, txn_id: str, shared: tuple[float, LabelEntry | None]
) -> None:
    """The log's clock when this label is applied (a partition's clock lags the log's
    between its own events; the next event sets it again) and the label table's entry."""
    clock, entry = shared
    engine.clock = max(engine.clock, clock)
    table = engine.store.table("label")
    if entry is None:
        table.pop(txn_id, None)
    else:
        table[txn_id] = entry
