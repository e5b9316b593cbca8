"""The out-of-time training split, shaped by how late chargebacks arrive.

The model is judged as if trained at the start of the holdout (the most recent
`holdout_days`), with only the labels known then. A payment's chargeback takes up to
`label_maturity_days` to arrive, so the payments of the last `label_maturity_days` before
the holdout are not yet *mature*: their frauds may still look genuine. They are left out
of training and validation, never taught as genuine. Validation is the `validation_days`
just before that gap, training everything earlier; both use the labels known at the
holdout start (`label_time <= holdout start`). The holdout is judged on `is_fraud` (for
simulated data the ground truth; for your own data, what you know today).

    | train ............ | validation | immature (left out) | holdout |
                         ^            ^                     ^
            holdout - maturity - validation   holdout - maturity   holdout start
"""

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.features import FEATURE_NAMES


class TrainingDataError(ValueError):
    """The data cannot be split into usable periods; the message says why."""


@dataclass(frozen=True)
class Period:
    name: str
    frame: pd.DataFrame
    labels: np.ndarray  # int8 0/1 as usable for this period
    cutoff: pd.Timestamp | None  # labels known by then; None: ground truth

    @property
    def features(self) -> np.ndarray:
        return self.frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)

    def summary(self) -> dict[str, object]:
        return {
            "rows": len(self.frame),
            "positives": int(self.labels.sum()),
            "frauds_in_truth": int(self.frame["is_fraud"].sum()),
            "first_event": str(self.frame["event_time"].min()),
            "last_event": str(self.frame["event_time"].max()),
            "label_cutoff": str(self.cutoff) if self.cutoff is not None else "ground truth",
        }


@dataclass(frozen=True)
class TrainingSet:
    train: Period
    validation: Period
    holdout: Period
    immature: Period  # left out of training: too recent for their labels at the holdout start

    def periods(self) -> tuple[Period, Period, Period]:
        return self.train, self.validation, self.holdout


def known_labels(frame: pd.DataFrame, cutoff: pd.Timestamp) -> np.ndarray:
    """1 where the event is a fraud whose label arrived at or before `cutoff`."""
    known = frame["label_time"].notna() & (frame["label_time"] <= cutoff)
    return ((frame["is_fraud"] == 1) & known).to_numpy(dtype=np.int8)


def _days(delta: pd.Timedelta) -> str:
    return f"{delta / pd.Timedelta(days=1):g}"


def split_out_of_time(
    table: pd.DataFrame,
    validation_days: int = 7,
    holdout_days: int = 7,
    label_maturity_days: float = 7.0,
) -> TrainingSet:
    for column in ("is_fraud", "label_time"):
        if column not in table:
            raise TrainingDataError(f"training needs labelled data: no '{column}' column")
    times = table["event_time"]
    first, last_day = times.min(), times.max().floor("D")
    holdout_start = last_day - pd.Timedelta(days=holdout_days - 1)
    mature_end = holdout_start - pd.Timedelta(days=label_maturity_days)
    validation_start = mature_end - pd.Timedelta(days=validation_days)
    train = table[times < validation_start]
    validation = table[(times >= validation_start) & (times < mature_end)]
    holdout = table[times >= holdout_start]
    immature = table[(times >= mature_end) & (times < holdout_start)]
    split = TrainingSet(
        Period("train", train, known_labels(train, holdout_start), holdout_start),
        Period("validation", validation, known_labels(validation, holdout_start), holdout_start),
        Period("holdout", holdout, holdout["is_fraud"].to_numpy(dtype=np.int8), None),
        Period("immature", immature, known_labels(immature, holdout_start), holdout_start),
    )
    covered = last_day + pd.Timedelta(days=1) - first.floor("D")
    needed = pd.Timedelta(days=holdout_days + validation_days + label_maturity_days + 1)
    for period in split.periods():
        if len(period.frame) and period.labels.sum():
            continue
        if covered < needed:
            raise TrainingDataError(
                f"the data covers {_days(covered)} days but this split needs at least "
                f"{_days(needed)}: holdout {holdout_days} + label maturity "
                f"{label_maturity_days:g} + validation {validation_days} days + 1 day to "
                "train on"
            )
        raise TrainingDataError(
            f"the {period.name} period ({_period_dates(period.frame)}) has "
            f"{len(period.frame)} rows and no fraud whose label arrived by the holdout start "
            f"({holdout_start:%Y-%m-%d}); {_delay_hint(table, label_maturity_days)}"
        )
    return split


def _period_dates(frame: pd.DataFrame) -> str:
    if len(frame) == 0:
        return "empty"
    times = frame["event_time"]
    return f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"


def _delay_hint(table: pd.DataFrame, label_maturity_days: float) -> str:
    """What the data says about its label delay, to compare with the policy's maturity."""
    labelled = table[(table["is_fraud"] == 1) & table["label_time"].notna()]
    if len(labelled) == 0:
        return "the data has no fraud with a label_time at all"
    delay = (labelled["label_time"] - labelled["event_time"]).dt.total_seconds() / 86_400
    return (
        f"labels arrive a median {delay.median():.1f} days (90th percentile "
        f"{delay.quantile(0.9):.1f}) after the payment, against a label maturity of "
        f"{label_maturity_days:g} days: raise label_maturity_days in the policy, or use "
        "more days of data"
    )


PERIOD_COLUMN, LABEL_COLUMN = "period", "label"


def to_frame(split: TrainingSet) -> pd.DataFrame:
    """One table for the `training_set` asset: each row tagged with its period and label."""
    parts = []
    for p in (*split.periods(), split.immature):
        part = p.frame.copy()
        part[PERIOD_COLUMN] = p.name
        part[LABEL_COLUMN] = p.labels
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def from_frame(frame: pd.DataFrame) -> TrainingSet:
    def period(name: str) -> Period:
        rows = frame[frame[PERIOD_COLUMN] == name]
        return Period(name, rows, rows[LABEL_COLUMN].to_numpy(dtype=np.int8), None)

    return TrainingSet(period("train"), period("validation"), period("holdout"), period("immature"))


# What identifies the rows a model was trained and judged on.
FINGERPRINT_COLUMNS = ["transaction_id", "event_time", PERIOD_COLUMN, LABEL_COLUMN]


def content_digest(frame: pd.DataFrame) -> str:
    """A short hash of every value of `frame`, vectorized."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of the rows a model was trained and judged on."""
    return content_digest(frame[FINGERPRINT_COLUMNS])
