"""Legitimate card-holder behaviour: rhythms, favourite stores, travel, new phones, big buys."""

import datetime as dt

import numpy as np

from sentinel_dagster.simulation.events_table import NO_DEVICE, NO_LABEL, Events
from sentinel_dagster.simulation.world import (
    CARD_LIMIT,
    CHANNEL_ATM,
    CHANNEL_ONLINE,
    CHANNEL_POS,
    CITIES,
    CURRENCIES,
    FAVOURITE_SHOPS,
    FAVOURITE_STORES,
    SECONDS_PER_DAY,
    Cards,
    Merchants,
    amount_spread,
    city_centres,
    pick_in_city,
    typical_amount,
)

# Share of a day's payments in each hour (UTC taken as local time): quiet nights,
# a lunch peak and an evening peak.
HOUR_PROFILE = np.array(
    [0.4, 0.25, 0.15, 0.1, 0.1, 0.2, 0.6, 1.5, 2.5, 3.2, 3.8, 4.3,
     5.2, 5.0, 4.4, 4.2, 4.5, 5.2, 5.8, 5.5, 4.6, 3.4, 2.0, 1.0]
)  # fmt: skip
HOUR_PROFILE = HOUR_PROFILE / HOUR_PROFILE.sum()
# Monday .. Sunday: Friday and Saturday are busiest, Sunday quiet.
WEEKDAY_WEIGHT = np.array([0.95, 0.95, 1.0, 1.0, 1.15, 1.2, 0.8])
ATM_SHARE = 0.03
FAVOURITE_STORE_SHARE = 0.7
FAVOURITE_SHOP_SHARE = 0.6
BIG_PURCHASE_SHARE = 0.004
ATM_AMOUNTS = np.array([20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 300.0])
CITY_CURRENCY = np.array([CURRENCIES.index(c.currency) for c in CITIES], dtype=np.int8)


def current_device(rng: np.random.Generator, cards: Cards, card: np.ndarray, t: np.ndarray):
    """The phone a holder pays with: one of theirs, or the new one after a phone change."""
    second = cards.devices[card, 1]
    use_second = (second != NO_DEVICE) & (rng.random(len(card)) < 0.3)
    device = np.where(use_second, second, cards.devices[card, 0])
    changed = (cards.new_device[card] != NO_DEVICE) & (t >= cards.new_device_from[card])
    return np.where(changed, cards.new_device[card], device)


def legit_events(
    rng: np.random.Generator,
    cards: Cards,
    merchants: Merchants,
    card_ids: np.ndarray,
    start: int,
    days: int,
) -> Events:
    """All legitimate payments of the given cards over `days` days from `start`."""
    counts = rng.poisson(cards.daily_rate[card_ids] * days)
    card = np.repeat(card_ids, counts)
    n = len(card)
    first_weekday = dt.datetime.fromtimestamp(start, dt.UTC).weekday()
    day_w = WEEKDAY_WEIGHT[(first_weekday + np.arange(days)) % 7]
    day = rng.choice(days, n, p=day_w / day_w.sum())
    hour = (rng.choice(24, n, p=HOUR_PROFILE) + cards.hour_shift[card]) % 24
    t = start + day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n)

    trip = cards.trip_city[card]
    travelling = (trip >= 0) & (t >= cards.trip_start[card]) & (t < cards.trip_end[card])
    city = np.where(travelling, trip, cards.home_city[card])

    u = rng.random(n)
    channel = np.where(
        u < ATM_SHARE,
        CHANNEL_ATM,
        np.where(u < ATM_SHARE + cards.online_share[card], CHANNEL_ONLINE, CHANNEL_POS),
    ).astype(np.int8)
    pos, online, atm = channel == CHANNEL_POS, channel == CHANNEL_ONLINE, channel == CHANNEL_ATM

    merchant = np.empty(n, dtype=np.int64)
    favourite = rng.random(n)
    at_store = pos & ~travelling & (favourite < FAVOURITE_STORE_SHARE)
    merchant[at_store] = cards.favourite_stores[
        card[at_store], rng.integers(0, FAVOURITE_STORES, at_store.sum())
    ]
    elsewhere = pos & ~at_store
    merchant[elsewhere] = pick_in_city(rng, merchants.physical_by_city, city[elsewhere])
    at_shop = online & (favourite < FAVOURITE_SHOP_SHARE)
    merchant[at_shop] = cards.favourite_shops[
        card[at_shop], rng.integers(0, FAVOURITE_SHOPS, at_shop.sum())
    ]
    browsing = online & ~at_shop
    merchant[browsing] = rng.choice(merchants.online_ids, browsing.sum())
    merchant[atm] = pick_in_city(rng, merchants.atm_by_city, city[atm])

    category = merchants.category[merchant]
    amount = (
        typical_amount(category)
        * cards.spend_multiplier[card]
        * np.exp(rng.normal(0.0, 1.0, n) * amount_spread(category))
    )
    amount[atm] = rng.choice(ATM_AMOUNTS, atm.sum())
    big = ~atm & (rng.random(n) < BIG_PURCHASE_SHARE)  # a TV, a holiday, a ring
    amount[big] *= rng.uniform(4.0, 12.0, big.sum())
    amount = np.clip(np.round(amount, 2), 0.5, CARD_LIMIT)

    pays_by_phone = online | (pos & (rng.random(n) < cards.wallet_share[card]))
    device = np.where(pays_by_phone, current_device(rng, cards, card, t), NO_DEVICE)

    # In store: the terminal's place. Online: IP geolocation near the holder, often unknown.
    centre_lat, centre_lon = city_centres()
    lat = np.where(online, centre_lat[city] + rng.normal(0, 0.2, n), merchants.lat[merchant])
    lon = np.where(online, centre_lon[city] + rng.normal(0, 0.2, n), merchants.lon[merchant])
    unknown = online & (rng.random(n) < 0.2)
    lat[unknown] = np.nan
    lon[unknown] = np.nan
    currency = np.where(online, CITY_CURRENCY[cards.home_city[card]], CITY_CURRENCY[city])

    return Events(
        card=card.astype(np.int64),
        time=t.astype(np.int64),
        merchant=merchant,
        amount=amount,
        channel=channel,
        device=device.astype(np.int64),
        lat=lat,
        lon=lon,
        currency=currency.astype(np.int8),
        scenario=np.zeros(n, dtype=np.int8),
        label_time=np.full(n, NO_LABEL, dtype=np.int64),
    )
