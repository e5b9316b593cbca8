"""The fraud scenarios and their late-arriving labels.

Four scenarios are always on. A fifth, emerging one starts on a chosen date (off by default):
an attack the data before that date has never seen, so a model trained on it has to be
retrained to catch it.

Each scenario draws *incidents* (one card attacked once) and expands them into events.
Frauds are extra events on a card; the holder's own payments carry on around them.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from sentinel_dagster.simulation.events_table import NO_DEVICE, NO_LABEL, Events
from sentinel_dagster.simulation.legit_behaviour import CITY_CURRENCY
from sentinel_dagster.simulation.world import (
    CARD_LIMIT,
    CHANNEL_ATM,
    CHANNEL_ONLINE,
    CHANNEL_POS,
    CITIES,
    SECONDS_PER_DAY,
    Cards,
    Merchants,
    city_centres,
    pick_in_city,
    typical_amount,
)
from serving.events import SCENARIOS

CARD_TESTING, ACCOUNT_TAKEOVER, COMPROMISED_MERCHANT, STOLEN_CARD_SPREE, ATM_CASH_OUT = range(1, 6)
KNOWN = (CARD_TESTING, ACCOUNT_TAKEOVER, COMPROMISED_MERCHANT, STOLEN_CARD_SPREE)  # always on
EMERGING = ATM_CASH_OUT  # on from `SimulationParams.emerging_from`


@dataclass(frozen=True)
class ScenarioShape:
    # Known scenarios: share of all fraudulent events (they sum to 1). The emerging one: share
    # of the fraudulent events while it runs, taken from the known ones.
    share: float
    min_events: int  # events per incident: min_events + Poisson(extra_events)
    extra_events: float
    mean_gap_s: float  # mean time between an incident's events
    report_rate: float  # share of incidents whose holder ever files a chargeback

    @property
    def mean_events(self) -> float:
        return self.min_events + self.extra_events


SHAPES: dict[int, ScenarioShape] = {
    # Bots try a stolen number with tiny charges at many shops, seconds apart.
    CARD_TESTING: ScenarioShape(0.35, 6, 8.0, 25.0, 0.75),
    # A fraudster logs in from a new phone far away and buys big.
    ACCOUNT_TAKEOVER: ScenarioShape(0.20, 1, 2.0, 1800.0, 0.92),
    # Numbers skimmed at a breached store are used days later.
    COMPROMISED_MERCHANT: ScenarioShape(0.20, 1, 1.5, 3600.0, 0.9),
    # A stolen wallet: large in-store purchases at high-risk shops within hours.
    STOLEN_CARD_SPREE: ScenarioShape(0.25, 3, 2.5, 720.0, 0.95),
    # Emerging: cloned cards emptied at ATMs in the holder's city, late at night.
    ATM_CASH_OUT: ScenarioShape(0.25, 2, 0.6, 900.0, 0.95),
}
assert len(SHAPES) == len(SCENARIOS)
assert abs(sum(SHAPES[s].share for s in KNOWN) - 1.0) < 1e-9

LABEL_DELAY_MEDIAN_DAYS = 6.0
LABEL_DELAY_MAX_DAYS = 90.0
BREACH_WINDOW_DAYS = 5
COMPROMISED_CARDS_EXPLOITED = 0.7


@dataclass(frozen=True)
class Incidents:
    card: np.ndarray
    start: np.ndarray  # epoch seconds of the first event

    def __len__(self) -> int:
        return len(self.card)


def incident_counts(n_legit: int, fraud_rate: float, emerging_part: float = 0.0) -> dict[int, int]:
    """Incidents per scenario so that frauds make up `fraud_rate` of all events.

    `emerging_part` is the share of the period the emerging scenario runs (0: off, and no
    count for it). Its frauds are taken from the known scenarios' rather than added, so the
    fraud rate stays the one asked for.
    """
    n_fraud = fraud_rate / (1.0 - fraud_rate) * n_legit
    emerging = SHAPES[EMERGING]
    n_emerging = emerging.share * emerging_part * n_fraud
    n_known = n_fraud - n_emerging  # exactly n_fraud when off: the default data is unchanged
    counts = {s: max(1, round(SHAPES[s].share * n_known / SHAPES[s].mean_events)) for s in KNOWN}
    if emerging_part > 0:
        counts[EMERGING] = max(1, round(n_emerging / emerging.mean_events))
    return counts


def _expand(
    rng: np.random.Generator, incidents: Incidents, shape: ScenarioShape, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """(incident index, epoch seconds) for every event of every incident."""
    k = shape.min_events + rng.poisson(shape.extra_events, len(incidents))
    incident = np.repeat(np.arange(len(incidents)), k)
    gaps = rng.exponential(shape.mean_gap_s, len(incident))
    first = np.concatenate(([0], np.cumsum(k)[:-1]))
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[first], k)
    t = incidents.start[incident] + elapsed.astype(np.int64)
    return incident, np.minimum(t, end - 1)


def _far_city(
    rng: np.random.Generator, incidents: Incidents, cards: Cards, incident: np.ndarray
) -> np.ndarray:
    """A city other than the holder's home, one per incident, for each event."""
    home = cards.home_city[incidents.card]
    return ((home + rng.integers(1, len(CITIES), len(home))) % len(CITIES))[incident]


def _labels(
    rng: np.random.Generator, incident: np.ndarray, t: np.ndarray, shape: ScenarioShape
) -> np.ndarray:
    """Chargebacks arrive days after the incident's last event; some never arrive."""
    n = incident.max() + 1
    last = np.zeros(n, dtype=np.int64)
    np.maximum.at(last, incident, t)
    delay_days = np.clip(
        rng.lognormal(np.log(LABEL_DELAY_MEDIAN_DAYS), 0.7, n), 1.0, LABEL_DELAY_MAX_DAYS
    )
    label = last + (delay_days * SECONDS_PER_DAY).astype(np.int64)
    reported = rng.random(n) < shape.report_rate
    return np.where(reported, label, NO_LABEL)[incident]


def with_fixed_label_delay(events: Events, delay_days: float) -> Events:
    """The same events with every reported fraud labelled `delay_days` after its payment."""
    delay = round(delay_days * SECONDS_PER_DAY)
    reported = events.label_time != NO_LABEL
    label_time = np.where(reported, events.time + delay, NO_LABEL)
    return dataclasses.replace(events, label_time=label_time)


def _events(
    rng: np.random.Generator,
    scenario: int,
    card: np.ndarray,
    incident: np.ndarray,
    t: np.ndarray,
    merchant: np.ndarray,
    amount: np.ndarray,
    channel: np.ndarray,
    device: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    cards: Cards,
    merchants: Merchants,
) -> Events:
    in_store = channel == CHANNEL_POS
    local = CITY_CURRENCY[merchants.city[merchant]]
    return Events(
        card=card.astype(np.int64),
        time=t.astype(np.int64),
        merchant=merchant.astype(np.int64),
        amount=np.clip(np.round(amount, 2), 0.01, CARD_LIMIT),
        channel=channel.astype(np.int8),
        device=device.astype(np.int64),
        lat=lat,
        lon=lon,
        currency=np.where(in_store, local, CITY_CURRENCY[cards.home_city[card]]).astype(np.int8),
        scenario=np.full(len(card), scenario, dtype=np.int8),
        label_time=_labels(rng, incident, t, SHAPES[scenario]),
    )


def _remote_location(rng: np.random.Generator, city: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre_lat, centre_lon = city_centres()
    n = len(city)
    return centre_lat[city] + rng.normal(0, 0.2, n), centre_lon[city] + rng.normal(0, 0.2, n)


def _fresh_devices(first_id: int, incident: np.ndarray) -> np.ndarray:
    """The fraudster's own device, one per incident, never seen on the card before."""
    return first_id + incident


def card_testing(
    rng: np.random.Generator, incidents: Incidents, cards: Cards, m: Merchants, end: int, dev0: int
) -> Events:
    incident, t = _expand(rng, incidents, SHAPES[CARD_TESTING], end)
    n = len(incident)
    card = incidents.card[incident]
    lat, lon = _remote_location(rng, _far_city(rng, incidents, cards, incident))
    proxied = rng.random(n) < 0.5
    lat[proxied] = np.nan
    lon[proxied] = np.nan
    return _events(
        rng, CARD_TESTING, card, incident, t,
        merchant=rng.choice(m.online_ids, n),
        amount=rng.uniform(0.5, 4.99, n),
        channel=np.full(n, CHANNEL_ONLINE),
        device=_fresh_devices(dev0, incident),
        lat=lat, lon=lon, cards=cards, merchants=m,
    )  # fmt: skip


def account_takeover(
    rng: np.random.Generator, incidents: Incidents, cards: Cards, m: Merchants, end: int, dev0: int
) -> Events:
    incident, t = _expand(rng, incidents, SHAPES[ACCOUNT_TAKEOVER], end)
    n = len(incident)
    card = incidents.card[incident]
    lat, lon = _remote_location(rng, _far_city(rng, incidents, cards, incident))
    risky = rng.random(n) < 0.7
    merchant = np.where(risky, rng.choice(m.risky_online_ids, n), rng.choice(m.online_ids, n))
    profile = 60.0 * cards.spend_multiplier[card]
    return _events(
        rng, ACCOUNT_TAKEOVER, card, incident, t,
        merchant=merchant,
        amount=profile * rng.uniform(3.0, 10.0, n),
        channel=np.full(n, CHANNEL_ONLINE),
        device=_fresh_devices(dev0, incident),
        lat=lat, lon=lon, cards=cards, merchants=m,
    )  # fmt: skip


def breached_cards(
    rng: np.random.Generator, legit: Events, m: Merchants, wanted: int, start: int, days: int
) -> Incidents:
    """Cards that paid at a breached store during its breach window, and when they did.

    Stores are breached one by one (random order, random window in the first 60% of the
    period) until enough cards are compromised for `wanted` exploited cards.
    """
    by_merchant = np.argsort(legit.merchant, kind="stable")
    merchant_sorted = legit.merchant[by_merchant]
    physical = m.physical_by_city[0]
    cards: list[np.ndarray] = []
    first_seen: list[np.ndarray] = []
    found = 0
    for merchant in rng.permutation(physical):
        if found * COMPROMISED_CARDS_EXPLOITED >= wanted:
            break
        lo, hi = np.searchsorted(merchant_sorted, [merchant, merchant + 1])
        rows = by_merchant[lo:hi]
        window_start = start + int(rng.random() * 0.6 * days * SECONDS_PER_DAY)
        t = legit.time[rows]
        hit = rows[(t >= window_start) & (t < window_start + BREACH_WINDOW_DAYS * SECONDS_PER_DAY)]
        if len(hit) == 0:
            continue
        order = np.lexsort((legit.time[hit], legit.card[hit]))
        hit_card, first = np.unique(legit.card[hit][order], return_index=True)
        cards.append(hit_card)
        first_seen.append(legit.time[hit][order][first])
        found += len(hit_card)
    card = np.concatenate(cards) if cards else np.zeros(0, dtype=np.int64)
    seen = np.concatenate(first_seen) if first_seen else np.zeros(0, dtype=np.int64)
    _, unique = np.unique(card, return_index=True)  # a card breached twice is exploited once
    pick = rng.permutation(unique)[:wanted]
    return Incidents(card=card[pick], start=seen[pick])


def compromised_merchant(
    rng: np.random.Generator, breached: Incidents, cards: Cards, m: Merchants, end: int, dev0: int
) -> Events:
    # The numbers are sold and used 1 to 20 days after the breach.
    delay = (rng.uniform(1.0, 20.0, len(breached)) * SECONDS_PER_DAY).astype(np.int64)
    latest = end - SECONDS_PER_DAY // 2
    exploit = np.maximum(np.minimum(breached.start + delay, latest), breached.start + 60)
    incidents = Incidents(card=breached.card, start=exploit)
    incident, t = _expand(rng, incidents, SHAPES[COMPROMISED_MERCHANT], end)
    n = len(incident)
    card = incidents.card[incident]
    elsewhere = _far_city(rng, incidents, cards, incident)
    # Mostly card-not-present use of the number; sometimes a cloned card in another city.
    cloned = (rng.random(len(incidents)) < 0.3)[incident]
    merchant = np.where(
        cloned, pick_in_city(rng, m.physical_by_city, elsewhere), rng.choice(m.online_ids, n)
    )
    lat, lon = _remote_location(rng, elsewhere)
    lat = np.where(cloned, m.lat[merchant], lat)
    lon = np.where(cloned, m.lon[merchant], lon)
    return _events(
        rng, COMPROMISED_MERCHANT, card, incident, t,
        merchant=merchant,
        amount=typical_amount(m.category[merchant]) * rng.uniform(2.0, 6.0, n),
        channel=np.where(cloned, CHANNEL_POS, CHANNEL_ONLINE),
        device=np.where(cloned, NO_DEVICE, _fresh_devices(dev0, incident)),
        lat=lat, lon=lon, cards=cards, merchants=m,
    )  # fmt: skip


def stolen_card_spree(
    rng: np.random.Generator, incidents: Incidents, cards: Cards, m: Merchants, end: int
) -> Events:
    incident, t = _expand(rng, incidents, SHAPES[STOLEN_CARD_SPREE], end)
    n = len(incident)
    card = incidents.card[incident]
    merchant = pick_in_city(rng, m.risky_by_city, cards.home_city[card])
    return _events(
        rng, STOLEN_CARD_SPREE, card, incident, t,
        merchant=merchant,
        amount=typical_amount(m.category[merchant]) * rng.uniform(1.5, 4.0, n),
        channel=np.full(n, CHANNEL_POS),
        device=np.full(n, NO_DEVICE),
        lat=m.lat[merchant], lon=m.lon[merchant], cards=cards, merchants=m,
    )  # fmt: skip


# The machines' largest withdrawals: cash-out crews take the most each card allows. Honest
# holders take at most 300 (legit_behaviour.ATM_AMOUNTS), so half of these amounts are new.
CASH_OUT_AMOUNTS = np.array([200.0, 300.0, 400.0, 500.0])
CASH_OUT_WEIGHTS = np.array([0.1, 0.4, 0.25, 0.25])
CASH_OUT_HOURS = (22, 27)  # local hours [from, to) of the first withdrawal: 22:00 to 03:00


def cash_out_incidents(
    rng: np.random.Generator, n: int, n_cards: int, first: int, end: int
) -> Incidents:
    """`n` random cards, each cashed out one night between the day of `first` and `end`.

    Crews start late in the evening, so a card's withdrawals often straddle midnight, when
    its daily limit resets.
    """
    card = rng.integers(0, n_cards, n)
    day = rng.integers(first // SECONDS_PER_DAY, (end - 1) // SECONDS_PER_DAY + 1, n)
    hour = rng.integers(*CASH_OUT_HOURS, n)
    start = day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n)
    # A night the end of the period would cut short moves to the night before.
    start = np.where(start > end - 3 * 3600, start - SECONDS_PER_DAY, start)
    return Incidents(card=card, start=np.clip(start, first, end - 1))


def atm_cash_out(
    rng: np.random.Generator, incidents: Incidents, cards: Cards, m: Merchants, end: int
) -> Events:
    """Skimmed cards and PINs, cloned onto blank cards, are cashed out by a local crew at
    ATMs in the holder's own city: two or three of the largest withdrawals at nearby
    machines within the hour, late at night. None of the known scenarios' tells is there
    (no new device, no distant place, no online burst, no shop), and the known scenarios
    never touch an ATM: a model that has not seen this attack takes it for the holder."""
    incident, t = _expand(rng, incidents, SHAPES[ATM_CASH_OUT], end)
    n = len(incident)
    card = incidents.card[incident]
    atm = pick_in_city(rng, m.atm_by_city, cards.home_city[card])
    return _events(
        rng, ATM_CASH_OUT, card, incident, t,
        merchant=atm,
        amount=rng.choice(CASH_OUT_AMOUNTS, n, p=CASH_OUT_WEIGHTS),
        channel=np.full(n, CHANNEL_ATM),
        device=np.full(n, NO_DEVICE),
        lat=m.lat[atm], lon=m.lon[atm], cards=cards, merchants=m,
    )  # fmt: skip
