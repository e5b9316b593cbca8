"""Idempotent retries: the rules both feature engines (in memory and on Redis) apply.

A transaction id remembered within the dedup window is a retry. Each event the service
processes carries the fingerprint of its request body (`serving/resolve.py: fingerprint`);
the engine keeps it, and later the answer given, beside the id (not inside its record, so
snapshots, journals and Redis keys stay readable by the version before). A retry with the
same fingerprint changes no feature state and gets the stored answer back; one with another
fingerprint is refused (`ConflictingEvent`, a 409) before anything changes. An empty
fingerprint, as ids remembered by an older version or by the offline replay have, matches
any body.
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from serving.feature_engine import EventArgs

# What a retry is checked against: (card, merchant, event_time, fingerprint or "").
Remembered = tuple[str, str, float, str]


class Processed(NamedTuple):
    vector: list[float]
    state: str  # added, duplicate or too_late
    answer: bytes | None  # a retry's stored answer (`remember_answers`), if any


class ConflictingEvent(ValueError):
    """Event `index` of a call reuses `txn_id` with another request body. `changed` names
    what differs among what the state keeps (card_id, merchant_id, event_time); nothing of
    the call was processed."""

    def __init__(self, index: int, txn_id: str, changed: list[str]) -> None:
        self.index = index
        self.txn_id = txn_id
        self.changed = changed
        self.message = conflict_message(txn_id, changed)
        super().__init__(self.message)


def changed_fields(seen: Remembered, card: str, merchant: str, t: float) -> list[str]:
    pairs = (("card_id", seen[0], card), ("merchant_id", seen[1], merchant),
             ("event_time", seen[2], t))  # fmt: skip
    return [name for name, was, now in pairs if was != now]


def conflict_message(txn_id: str, changed: list[str]) -> str:
    which = ", ".join(changed) or "a field other than card_id, merchant_id and event_time"
    return (
        f"transaction_id: {txn_id!r} was already scored with a different body ({which} "
        "changed); a retry must repeat the original body, a new payment needs a new "
        "transaction_id"
    )


def check_call(
    events: "Sequence[EventArgs]",
    fingerprints: Sequence[str],
    stored: Callable[[str], Remembered | None],
    clock: float,
    window_s: float,
) -> None:
    """Raise ConflictingEvent for the first event whose id is remembered (before the call,
    or from an earlier event of it) with another fingerprint, exactly as processing the
    events one by one would; nothing is changed. `stored` reads what the state remembers,
    `clock` is the engine's, `window_s` its lateness plus dedup window."""
    earlier: dict[str, Remembered] = {}
    for index, (e, fp) in enumerate(zip(events, fingerprints, strict=True)):
        txn_id, t, card, merchant = e[0], e[1], e[2], e[3]
        clock = max(clock, t)
        seen = earlier.get(txn_id) or stored(txn_id)
        if seen is not None and seen[2] > clock - window_s:
            if fp and seen[3] and seen[3] != fp:
                raise ConflictingEvent(index, txn_id, changed_fields(seen, card, merchant, t))
            earlier[txn_id] = seen
        else:  # a new payment (even one too late to be added is remembered)
            earlier[txn_id] = (card, merchant, t, fp)
