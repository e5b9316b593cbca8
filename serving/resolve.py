"""Resolving a score request into the model's feature vector.

Each feature is, in order of preference: the value given in the request (the seed's seven
fields), else what the online state says about the card, merchant and device (when the
request carries a raw event with `card_id`), else its cold-start value. Cold-start values
come from the engine itself — a first event on an empty state — so they can never drift
from the ones the model was trained on.
"""

import time
from collections.abc import Mapping
from typing import Any

from serving.feature_engine import FeatureEngine, parse_event
from serving.features import FEATURE_INDEX, SEED_FEATURES

# The raw-event fields a stateful request must carry besides card_id.
STATEFUL_REQUIRED = ("transaction_id", "merchant_id")
_COLD_IDS = ("cold-start", "cold-start-card", "cold-start-merchant")


class ResolveError(ValueError):
    """The request cannot be turned into features; the message names the field."""


def _event(request: Mapping[str, Any], received_at: float) -> dict[str, Any]:
    event = {k: request.get(k) for k in (
        "transaction_id", "card_id", "merchant_id", "amount", "channel", "device_id",
        "lat", "lon", "merchant_category",
    )}  # fmt: skip
    event["event_time"] = request.get("event_time") or received_at
    return event


def check_stateful_fields(request: Mapping[str, Any]) -> bool:
    """True if the request updates online state; ResolveError if it lacks what that needs."""
    if request.get("card_id") is None:
        return False
    missing = [name for name in STATEFUL_REQUIRED if not request.get(name)]
    if missing:
        raise ResolveError(f"{', '.join(missing)}: required when card_id is given")
    return True


def resolve_features(
    engine: FeatureEngine, request: Mapping[str, Any], received_at: float | None = None
) -> tuple[list[float], bool]:
    """(vector in FEATURE_NAMES order, whether the online state was used and updated)."""
    received_at = time.time() if received_at is None else received_at
    event = _event(request, received_at)
    stateful = check_stateful_fields(request)
    if stateful:
        vector = engine.process_event(event)
    else:
        # No card: nothing to look up or update. Score the event as a first-ever payment.
        txn, card, merchant = _COLD_IDS
        cold = {**event, "transaction_id": txn, "card_id": card, "merchant_id": merchant}
        vector = FeatureEngine().process(*parse_event(cold))
    for name in SEED_FEATURES:
        value = request.get(name)
        if value is not None:
            vector[FEATURE_INDEX[name]] = float(value)
    return vector, stateful
