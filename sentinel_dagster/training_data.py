"""The out-of-time training split and the label-cutoff rule.

Train on the earliest days, validate on the next `validation_days`, hold out the most recent
`holdout_days`. A fraud counts as a positive for a period only if its label was known
(`label_time <= cutoff`) when that period ended — the train cutoff is the start of
validation, the validation cutoff the start of the holdout — because a model retrained at
that moment could not have known later chargebacks. The holdout is judged on `is_fraud`
(for simulated data the ground truth; for your own data, what you know today).
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

    def periods(self) -> tuple[Period, Period, Period]:
        return self.train, self.validation, self.holdout


def known_labels(frame: pd.DataFrame, cutoff: pd.Timestamp) -> np.ndarray:
    """1 where the event is a fraud whose label arrived at or before `cutoff`."""
    known = frame["label_time"].notna() & (frame["label_time"] <= cutoff)
    return ((frame["is_fraud"] == 1) & known).to_numpy(dtype=np.int8)


def split_out_of_time(
    table: pd.DataFrame, validation_days: int = 7, holdout_days: int = 7
) -> TrainingSet:
    for column in ("is_fraud", "label_time"):
        if column not in table:
            raise TrainingDataError(f"training needs labelled data: no '{column}' column")
    last_day = table["event_time"].max().floor("D")
    holdout_start = last_day - pd.Timedelta(days=holdout_days - 1)
    validation_start = holdout_start - pd.Timedelta(days=validation_days)
    times = table["event_time"]
    train = table[times < validation_start]
    validation = table[(times >= validation_start) & (times < holdout_start)]
    holdout = table[times >= holdout_start]
    split = TrainingSet(
        Period("train", train, known_labels(train, validation_start), validation_start),
        Period("validation", validation, known_labels(validation, holdout_start), holdout_start),
        Period("holdout", holdout, holdout["is_fraud"].to_numpy(dtype=np.int8), None),
    )
    for period in split.periods():
        if len(period.frame) == 0 or period.labels.sum() == 0:
            raise TrainingDataError(
                f"the {period.name} period has {len(period.frame)} rows and "
                f"{int(period.labels.sum())} usable frauds: need more days of labelled data "
                f"than validation ({validation_days}) + holdout ({holdout_days})"
            )
    return split


PERIOD_COLUMN, LABEL_COLUMN = "period", "label"


def to_frame(split: TrainingSet) -> pd.DataFrame:
    """One table for the `training_set` asset: each row tagged with its period and label."""
    parts = []
    for p in split.periods():
        part = p.frame.copy()
        part[PERIOD_COLUMN] = p.name
        part[LABEL_COLUMN] = p.labels
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def from_frame(frame: pd.DataFrame) -> TrainingSet:
    def period(name: str) -> Period:
        rows = frame[frame[PERIOD_COLUMN] == name]
        return Period(name, rows, rows[LABEL_COLUMN].to_numpy(dtype=np.int8), None)

    return TrainingSet(period("train"), period("validation"), period("holdout"))


def fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of the rows a model was trained and judged on."""
    keys = frame[["transaction_id", "event_time", PERIOD_COLUMN, LABEL_COLUMN]]
    hashed = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
