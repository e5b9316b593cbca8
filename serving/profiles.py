"""Request profiles: which model answers a request, by what the request carries.

A bundle holds a *full* model (every feature of the feature set, scored on raw events with
the online state) and a model per request profile: a named subset of the features that a
caller sends precomputed, without identity. The earlier system's callers send seven
features and no card, merchant or transaction id: `precomputed-7`. A deployment declares
more profiles in its policy (`request_profiles:`); each is trained, gated and published
beside the full model, from the same training set.

Choosing, for each bundle (champion and challenger alike): a request with a `card_id`
updates and reads the online state, so the full model answers it (values the request gives
take precedence, as always). A request without one is answered by the bundle's largest
profile model whose features it all carries; without one, by the full model with cold-start
values for what it lacks. When the request carries a profile the bundle has no model for
(the built-in `precomputed-7`, or one of the other bundle's), the full model answers (in a
bundle with no full model, its largest profile model) and the answer says which profile was
wanted.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Final

from serving.features import FEATURE_INDEX, FEATURE_NAMES, SEED_FEATURES
from serving.schemas import ScoreRequest

FULL: Final = "full"
PRECOMPUTED_7: Final = "precomputed-7"
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

# What a request without a card can carry: the seed's seven fields as given values, and the
# features computed from the event's own fields (its time is the event_time, or arrival).
TIME_FEATURES: Final = ("hour_of_day", "day_of_week")
FROM_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "channel_online": ("channel_online", "channel"),
    "merchant_category_code": ("merchant_category",),
}
REQUEST_FEATURES: Final[tuple[str, ...]] = tuple(
    name
    for name in FEATURE_NAMES
    if name in SEED_FEATURES or name in TIME_FEATURES or name in FROM_FIELDS
)


class ProfileError(ValueError):
    """A profile declaration that no request could match; the message says why."""


@dataclass(frozen=True)
class RequestProfile:
    name: str
    features: tuple[str, ...]  # in FEATURE_NAMES order: the profile model's input columns

    @cached_property
    def columns(self) -> tuple[int, ...]:
        """Positions of the profile's features in a full vector."""
        return tuple(FEATURE_INDEX[name] for name in self.features)


def declare_profile(name: str, features: list[str] | tuple[str, ...]) -> RequestProfile:
    """A checked profile, its features in FEATURE_NAMES order; ProfileError naming the
    problem (a reserved or malformed name, an unknown feature, one a request cannot carry)."""
    if name == FULL or not NAME_PATTERN.match(name):
        raise ProfileError(
            f"profile name {name!r}: lower-case letters, digits, '-' or '_' (at most 40), "
            f"and not {FULL!r}"
        )
    unknown = [f for f in features if f not in FEATURE_INDEX]
    if unknown:
        raise ProfileError(f"profile {name}: unknown features {unknown}")
    beyond = [f for f in features if f not in REQUEST_FEATURES]
    if beyond:
        raise ProfileError(
            f"profile {name}: a request cannot carry {beyond} (it can carry "
            f"{', '.join(REQUEST_FEATURES)})"
        )
    if not features or len(set(features)) != len(features):
        raise ProfileError(f"profile {name}: needs distinct features, at least one")
    return RequestProfile(name, tuple(f for f in FEATURE_NAMES if f in features))


DEFAULT_PROFILES: Final = (declare_profile(PRECOMPUTED_7, SEED_FEATURES),)


def carried(request: ScoreRequest) -> frozenset[str]:
    """The features a request without a card carries. A seed field counts when the body
    gives it, even as null (a card with no 7-day history has no `avg_amount_7d`)."""
    given = request.model_fields_set  # pydantic's: the fields the body gave, null included
    names = {"amount", *TIME_FEATURES, *(f for f in SEED_FEATURES if f in given)}
    names.update(f for f, fields in FROM_FIELDS.items() if any(n in given for n in fields))
    return frozenset(names)


def wanted_profile(
    request: ScoreRequest,
    own: tuple[RequestProfile, ...],
    known: tuple[RequestProfile, ...] = (),
) -> str:
    """The profile whose model should answer, for a bundle whose profile models are `own`
    (largest first): FULL for a request with a card; else the largest of `own` whose
    features the request carries; else the largest of `known` it carries (a profile this
    bundle has no model for: its answer says so); else FULL."""
    if request.card_id is not None or not (own or known):
        return FULL
    has = carried(request)
    for profiles in (own, known):
        for profile in profiles:
            if has.issuperset(profile.features):
                return profile.name
    return FULL


def largest_first(profiles: list[RequestProfile]) -> tuple[RequestProfile, ...]:
    """One profile per name, the most features first (ties by name): `wanted_profile`'s order."""
    unique = {p.name: p for p in reversed(profiles)}  # the first declaration of a name wins
    return tuple(sorted(unique.values(), key=lambda p: (-len(p.features), p.name)))
