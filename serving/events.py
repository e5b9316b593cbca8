"""The transaction event contract (DESIGN.md §3), shared by the pipeline and the service.

Plain Python on purpose: `serving/` must not import pandas or pyarrow, and the pipeline
derives its Parquet schema and validation suite from these names.
"""

from enum import StrEnum
from typing import Final


class ColumnKind(StrEnum):
    """The logical type of an event column; the Parquet and JSON forms map onto it."""

    STRING = "string"
    TIMESTAMP = "timestamp"
    FLOAT = "float"
    FLAG = "flag"  # 0/1 integer


REQUIRED_COLUMNS: Final[dict[str, ColumnKind]] = {
    "transaction_id": ColumnKind.STRING,
    "event_time": ColumnKind.TIMESTAMP,
    "card_id": ColumnKind.STRING,
    "merchant_id": ColumnKind.STRING,
    "amount": ColumnKind.FLOAT,
}

OPTIONAL_COLUMNS: Final[dict[str, ColumnKind]] = {
    "merchant_category": ColumnKind.STRING,
    "currency": ColumnKind.STRING,
    "channel": ColumnKind.STRING,
    "device_id": ColumnKind.STRING,
    "lat": ColumnKind.FLOAT,
    "lon": ColumnKind.FLOAT,
}

# Present in labelled data. `label_time` is when the label became known (a chargeback
# arrives days later); it is null when the fraud was never reported, and for legitimate
# events. `fraud_scenario` comes from the simulator only.
LABEL_COLUMNS: Final[dict[str, ColumnKind]] = {
    "is_fraud": ColumnKind.FLAG,
    "label_time": ColumnKind.TIMESTAMP,
    "fraud_scenario": ColumnKind.STRING,
}

ALL_COLUMNS: Final[dict[str, ColumnKind]] = {
    **REQUIRED_COLUMNS,
    **OPTIONAL_COLUMNS,
    **LABEL_COLUMNS,
}

# Entity keys: never null.
KEY_COLUMNS: Final[tuple[str, ...]] = tuple(REQUIRED_COLUMNS)

CHANNELS: Final[tuple[str, ...]] = ("pos", "online", "atm")

# The values of the `fraud_scenario` label column (simulated data carries it): the simulator
# writes them, the evaluation and the daily statistics break figures down by them.
SCENARIOS: Final[tuple[str, ...]] = (
    "card_testing",
    "account_takeover",
    "compromised_merchant",
    "stolen_card_spree",
    "atm_cash_out",  # emerging: only in data simulated with `emerging_from`
)
