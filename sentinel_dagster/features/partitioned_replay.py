"""The replay split by entity: the same training table as one process, from partitions.

Every feature belongs to one entity (`serving/features.py`): the event's own fields, its
card (the card's windows, devices and locations: device features are the card's history of
devices) or its merchant. A card's features need only that card's events and labels, a
merchant's only the merchant's. So the log is split twice, by card and by merchant, and each
partition is replayed by the same engine (`feature_replay.replay`) in the same
(event_time, transaction_id) order; each row takes its event and card features from its
card's partition and its merchant features from its merchant's. A row's label travels with
it, so a label reaches its transaction's card and merchant. The partial tables are joined
back on the row: its transaction id and its place in the input (ids may repeat).

What one process knows and a partition does not, and how a partition is told:
- The clock. The replay reads the log in event-time order, so at each event the clock is
  that event's own time in every partition: no event is too late offline, and windows,
  expiry and trimming see the same bounds. Between events a partition's clock lags the
  log's; that matters to a fraud label's horizon, which decides whether an idle card or
  merchant starts afresh (and so where its prefix sums start: amounts would differ in their
  last bits) and whether a repeated fraud label is a duplicate. So every fraud label is
  given the log's clock (the latest event time strictly before it).
- Transaction ids that several rows share (retries, reused ids, an id seen with two cards):
  `shared_id_tables` computes, for every row of such an id, what the log's transaction and
  label tables hold for it just before the row. The partition sets them and the engine
  decides from them as it would in one process (`feature_replay.SharedIds`).

Plain pandas and numpy: `partitioned_replay` runs the plan in one process (the reference
the Spark job is tested against), and `features/spark_replay.py` runs the same functions in
Spark tasks.
"""

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from sentinel_dagster.features.feature_replay import (
    KEY_COLUMNS,
    LABEL_COLUMNS,
    LabelEntry,
    SharedIds,
    TxnEntry,
    check_replayable,
    epoch_seconds,
    replay,
)
from serving.feature_engine import EngineConfig
from serving.features import Entity, FeatureSet

ROW = "_row"  # a row's place in the input: with its transaction id, the key the sides join on
SIDES = {"card": "card_id", "merchant": "merchant_id"}  # side -> the column it is split by
# The log's clock when the row's fraud label is applied (NaN: no fraud label).
LABEL_CLOCK = "_label_clock"
# What the log's id tables hold before a row of a repeated id (NaN / null: no entry).
TXN_SET, TXN_CARD, TXN_MERCHANT, TXN_TIME = "_txn_set", "_txn_card", "_txn_merchant", "_txn_time"
LABEL_TIME, LABEL_EVENT_TIME = "_label_time", "_label_event_time"
# What `shared_id_tables` returns, with its dtypes.
SHARED_SCHEMA = {
    ROW: "int64", TXN_SET: "bool", TXN_CARD: "object", TXN_MERCHANT: "object",
    TXN_TIME: "float64", LABEL_TIME: "float64", LABEL_EVENT_TIME: "float64",
}  # fmt: skip
PLAN_COLUMNS = (LABEL_CLOCK, *list(SHARED_SCHEMA)[1:])


def side_features(features: FeatureSet, side: str) -> list[str]:
    """The declared features one side computes, in declaration order."""
    merchant = side == "merchant"
    return [f.name for f in features.features if (f.entity is Entity.MERCHANT) == merchant]


def clock_before(event_times: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The log's clock when a label arriving at each time is applied: the latest event time
    strictly before it (the replay applies a label before any event at or after its time),
    -inf before the first event."""
    ordered = np.sort(np.asarray(event_times, dtype="float64"))

    def at(label_times: np.ndarray) -> np.ndarray:
        k = np.searchsorted(ordered, label_times, side="left")
        return np.where(k > 0, ordered[np.maximum(k - 1, 0)], -np.inf)

    return at


def _fraud_flags(rows: pd.DataFrame) -> np.ndarray:
    """Which rows carry a fraud label the engine records (not-fraud labels only count)."""
    if "label_time" not in rows or "is_fraud" not in rows:
        return np.zeros(len(rows), dtype=bool)
    labelled = rows["label_time"].notna().to_numpy()
    fraud = rows["is_fraud"].fillna(0).astype(bool).to_numpy() if labelled.any() else labelled
    return labelled & fraud


def shared_id_tables(rows: pd.DataFrame, config: EngineConfig) -> pd.DataFrame:
    """For `rows` (every row of some transaction ids, with LABEL_CLOCK), what the log's id
    tables hold for the row's id just before its event and its fraud label: the engine's own
    bookkeeping (`FeatureEngine.process` and `apply_label`) replayed per id, in log order.

    An event is a retry (the table keeps its entry) if the id's entry is younger than the
    dedup window; otherwise the event becomes the entry. A fraud label is a duplicate if the
    id's label entry's event is after the horizon at the label's clock; otherwise it
    becomes the entry. Label entries matter only for ids with two or more fraud labels."""
    out = {name: np.zeros(len(rows), dtype=dtype) for name, dtype in SHARED_SCHEMA.items()}
    if rows.empty:
        return pd.DataFrame(out)
    lateness, dedup = config.allowed_lateness_s, config.dedup_window_s
    reach = config.features.longest_reach_s()
    ids = rows["transaction_id"].astype(str).to_numpy()
    times = epoch_seconds(rows["event_time"])
    fraud = _fraud_flags(rows)
    label_times = np.full(len(rows), np.nan)
    if fraud.any():
        label_times[fraud] = epoch_seconds(rows["label_time"][fraud])
    cards = rows["card_id"].astype(str).to_numpy()
    merchants = rows["merchant_id"].astype(str).to_numpy()
    row_keys = rows[ROW].to_numpy(dtype="int64")
    event_key = rows["event_time"].astype("int64").to_numpy()  # the log's sort key, exactly

    out[ROW] = row_keys
    out[TXN_SET][:] = True
    txn_card = np.full(len(rows), None, dtype=object)
    txn_merchant = np.full(len(rows), None, dtype=object)
    txn_time = np.full(len(rows), np.nan)
    # Each id's events in the log's order: (event_time, input place).
    for group in _groups(ids, np.lexsort((row_keys, event_key, ids))):
        entry: tuple[str, str, float] | None = None
        for i in group:
            if entry is not None:
                txn_card[i], txn_merchant[i], txn_time[i] = entry
            t = times[i]
            if entry is None or entry[2] <= t - lateness - dedup:  # not a retry
                entry = (cards[i], merchants[i], t)
    out[TXN_CARD], out[TXN_MERCHANT], out[TXN_TIME] = txn_card, txn_merchant, txn_time

    label_clock = rows[LABEL_CLOCK].to_numpy(dtype="float64")
    label_time = np.full(len(rows), np.nan)
    label_event_time = np.full(len(rows), np.nan)
    labelled = np.flatnonzero(fraud)
    # Each id's fraud labels in the replay's order of arrivals: (label time, event order).
    order = labelled[
        np.lexsort((row_keys[labelled], event_key[labelled], label_times[labelled], ids[labelled]))
    ]
    for group in _groups(ids[order], np.arange(len(order))):
        applied: tuple[float, float] | None = None
        for i in order[group]:
            if applied is not None:
                label_time[i], label_event_time[i] = applied
            horizon = label_clock[i] - lateness - reach
            if applied is None or applied[1] <= horizon:  # not a duplicate label
                applied = (label_times[i], times[i])
    out[LABEL_TIME], out[LABEL_EVENT_TIME] = label_time, label_event_time
    return pd.DataFrame(out)


def _groups(keys: np.ndarray, order: np.ndarray) -> Iterable[np.ndarray]:
    """`order` (indices sorted by key first) cut into runs of equal keys."""
    if len(order) == 0:
        return []
    ordered = keys[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    return np.split(order, cuts)


def repeated_ids(frame: pd.DataFrame) -> np.ndarray:
    """Which rows have a transaction id that another row has too."""
    return frame["transaction_id"].astype(str).duplicated(keep=False).to_numpy()


def _shared(part: pd.DataFrame) -> SharedIds:
    """The `SharedIds` of a partition in log order, from its plan columns."""
    cards = part[TXN_CARD].to_numpy(dtype=object)
    merchants = part[TXN_MERCHANT].to_numpy(dtype=object)
    txn_times = part[TXN_TIME].to_numpy(dtype="float64")
    txns: dict[int, TxnEntry | None] = {}
    for i in np.flatnonzero(part[TXN_SET].fillna(False).to_numpy(dtype=bool)):
        card = cards[i]  # not a string: the id had no entry
        txns[int(i)] = (card, merchants[i], float(txn_times[i])) if isinstance(card, str) else None
    clocks = part[LABEL_CLOCK].to_numpy(dtype="float64")
    label_times = part[LABEL_TIME].to_numpy(dtype="float64")
    event_times = part[LABEL_EVENT_TIME].to_numpy(dtype="float64")
    labels: dict[int, tuple[float, LabelEntry | None]] = {}
    for i in np.flatnonzero(~np.isnan(clocks)):
        known = not np.isnan(label_times[i])
        entry = (float(label_times[i]), float(event_times[i])) if known else None
        labels[int(i)] = (float(clocks[i]), entry)
    return SharedIds(txns, labels)


def in_log_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the replay's order: (event_time, transaction_id), ties in input order."""
    return frame.sort_values(
        ["event_time", "transaction_id", ROW], kind="stable", ignore_index=True
    )


def computed(name: str) -> str:
    """A feature's column while the table is being built: apart from the input's columns
    (the feature `amount` and the column `amount`)."""
    return f"_feature_{name}"


def replay_side(
    part: pd.DataFrame, config: EngineConfig, side: str
) -> tuple[np.ndarray, pd.DataFrame]:
    """One partition's side: the rows' positions in log order, and that side's features
    (columns named `computed(name)`) in that order."""
    order = (
        part.reset_index(drop=True)
        .sort_values(["event_time", "transaction_id", ROW], kind="stable")
        .index.to_numpy()
    )
    rows = part.iloc[order].reset_index(drop=True)
    shared = _shared(rows)
    table = replay(
        rows.drop(columns=[c for c in PLAN_COLUMNS if c in rows]), config, shared=shared
    ).table
    names = side_features(config.features, side)
    return order, table[names].rename(columns=computed)


def partition_of(values: pd.Series, partitions: int) -> np.ndarray:
    """A stable hash partition of each key (any consistent hash splits the same way)."""
    hashed = pd.util.hash_array(values.astype(str).to_numpy(dtype=object))
    return (hashed % np.uint64(partitions)).astype("int64")


def planned(frame: pd.DataFrame, config: EngineConfig) -> pd.DataFrame:
    """`frame` (with ROW) plus the plan's columns: each fraud label's clock, and for the
    rows of repeated ids what the log's id tables hold before them."""
    frame = frame.copy()
    clocks = np.full(len(frame), np.nan)
    fraud = _fraud_flags(frame)
    if fraud.any():
        at = clock_before(epoch_seconds(frame["event_time"]))
        clocks[fraud] = at(epoch_seconds(frame["label_time"][fraud]))
    frame[LABEL_CLOCK] = clocks
    tables = shared_id_tables(frame[repeated_ids(frame)], config)
    return frame.merge(tables, on=ROW, how="left")


def partitioned_replay(
    frame: pd.DataFrame, config: EngineConfig | None = None, partitions: int = 4
) -> pd.DataFrame:
    """The table `replay(frame, config)` makes, computed partition by partition in this
    process: the plan `spark_replay` distributes, for tests and for reading. The card side
    adds its features to the rows, then the merchant side adds its own."""
    config = config or EngineConfig()
    check_replayable(frame)
    frame = frame.reset_index(drop=True)
    frame.insert(0, ROW, np.arange(len(frame), dtype="int64"))
    table = planned(frame, config)
    for side, column in SIDES.items():
        parts = partition_of(table[column], partitions)
        pieces = []
        for p in np.unique(parts):
            part = table[parts == p]
            order, features = replay_side(part, config, side)
            pieces.append(pd.concat([part.iloc[order].reset_index(drop=True), features], axis=1))
        table = pd.concat(pieces, ignore_index=True)
    return finished(table, config.features)


def finished(table: pd.DataFrame, features: FeatureSet) -> pd.DataFrame:
    """Both sides' features on every row: in log order, with the columns `replay` gives."""
    table = in_log_order(table)
    labels = [c for c in LABEL_COLUMNS if c in table]
    out = table[[*KEY_COLUMNS, *map(computed, features.names), *labels]]
    return out.rename(columns={computed(name): name for name in features.names})
