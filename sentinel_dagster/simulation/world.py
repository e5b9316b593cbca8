"""The simulated world: cities, merchant categories, merchants and card holders.

Everything is a flat numpy array indexed by entity number, so the simulator can draw a
million events with vectorized operations instead of a Python loop per event.
"""

from dataclasses import dataclass

import numpy as np

CARD_LIMIT = 20_000.0  # no single payment above this: well inside the data policy's cap
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class City:
    name: str
    lat: float
    lon: float
    currency: str
    weight: float  # share of card holders living there


CITIES: tuple[City, ...] = (
    City("New York", 40.71, -74.01, "USD", 0.16),
    City("Los Angeles", 34.05, -118.24, "USD", 0.12),
    City("Chicago", 41.88, -87.63, "USD", 0.09),
    City("Houston", 29.76, -95.37, "USD", 0.08),
    City("Phoenix", 33.45, -112.07, "USD", 0.05),
    City("Philadelphia", 39.95, -75.17, "USD", 0.05),
    City("San Antonio", 29.42, -98.49, "USD", 0.04),
    City("San Diego", 32.72, -117.16, "USD", 0.04),
    City("Dallas", 32.78, -96.80, "USD", 0.05),
    City("Seattle", 47.61, -122.33, "USD", 0.04),
    City("Denver", 39.74, -104.99, "USD", 0.04),
    City("Miami", 25.76, -80.19, "USD", 0.05),
    City("Atlanta", 33.75, -84.39, "USD", 0.04),
    City("Boston", 42.36, -71.06, "USD", 0.04),
    City("Toronto", 43.65, -79.38, "CAD", 0.03),
    City("Mexico City", 19.43, -99.13, "MXN", 0.02),
    City("London", 51.51, -0.13, "GBP", 0.02),
    City("Paris", 48.86, 2.35, "EUR", 0.01),
    City("Berlin", 52.52, 13.40, "EUR", 0.01),
    City("Tokyo", 35.68, 139.69, "JPY", 0.02),
)

CURRENCIES: tuple[str, ...] = tuple(sorted({c.currency for c in CITIES}))


@dataclass(frozen=True)
class Category:
    name: str
    median_amount: float
    sigma: float  # log-normal spread of amounts
    merchant_share: float  # share of all merchants in this category
    online_share: float  # share of its merchants that sell online only
    high_risk: bool  # where stolen cards get cashed out


CATEGORIES: tuple[Category, ...] = (
    Category("grocery", 45.0, 0.6, 0.20, 0.05, False),
    Category("restaurant", 32.0, 0.5, 0.20, 0.0, False),
    Category("fuel", 48.0, 0.35, 0.08, 0.0, False),
    Category("retail", 65.0, 0.7, 0.14, 0.25, False),
    Category("pharmacy", 24.0, 0.6, 0.06, 0.1, False),
    Category("travel", 380.0, 0.8, 0.04, 0.6, False),
    Category("subscriptions", 14.0, 0.4, 0.05, 1.0, False),
    Category("online_marketplace", 55.0, 0.8, 0.08, 1.0, False),
    Category("electronics", 240.0, 0.8, 0.06, 0.4, True),
    Category("jewelry", 520.0, 0.7, 0.03, 0.2, True),
    Category("gift_cards", 90.0, 0.5, 0.03, 0.5, True),
    Category("digital_goods", 19.0, 0.6, 0.03, 1.0, True),
)
ATM_CATEGORY = "atm"
CATEGORY_NAMES: tuple[str, ...] = (*(c.name for c in CATEGORIES), ATM_CATEGORY)
ATM_CATEGORY_CODE = len(CATEGORIES)

CHANNEL_POS, CHANNEL_ONLINE, CHANNEL_ATM = 0, 1, 2
CHANNEL_NAMES: tuple[str, ...] = ("pos", "online", "atm")

FAVOURITE_STORES = 8  # physical merchants a card holder keeps going back to
FAVOURITE_SHOPS = 4  # online merchants likewise
ATMS_PER_CITY = 6


def _jitter(rng: np.random.Generator, n: int, km: float) -> tuple[np.ndarray, np.ndarray]:
    """Random offsets in degrees of about `km` standard deviation around a point."""
    return rng.normal(0.0, km / 111.0, n), rng.normal(0.0, km / 111.0, n)


@dataclass(frozen=True)
class Merchants:
    category: np.ndarray  # int index into CATEGORY_NAMES
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    online: np.ndarray  # bool: sells online only
    # Lookup tables so a "random merchant of kind K in city C" is one vectorized draw.
    physical_by_city: tuple[np.ndarray, np.ndarray, np.ndarray]  # (ids, start, count)
    risky_by_city: tuple[np.ndarray, np.ndarray, np.ndarray]
    atm_by_city: tuple[np.ndarray, np.ndarray, np.ndarray]
    online_ids: np.ndarray
    risky_online_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.category)


def _group_by_city(ids: np.ndarray, city: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(city[ids], kind="stable")
    sorted_ids = ids[order]
    count = np.bincount(city[sorted_ids], minlength=len(CITIES))
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    return sorted_ids, start, count


def pick_in_city(
    rng: np.random.Generator, table: tuple[np.ndarray, np.ndarray, np.ndarray], city: np.ndarray
) -> np.ndarray:
    """One uniformly random member of `table` for each entry of `city`."""
    ids, start, count = table
    offset = (rng.random(len(city)) * count[city]).astype(np.int64)
    return ids[start[city] + offset]


def build_merchants(rng: np.random.Generator, n_merchants: int) -> Merchants:
    city_w = np.array([c.weight for c in CITIES])
    cat_w = np.array([c.merchant_share for c in CATEGORIES])
    n_cities = len(CITIES)
    # Every city gets at least one store of every category, so any draw "in city C" succeeds.
    base_city = np.repeat(np.arange(n_cities), len(CATEGORIES))
    base_cat = np.tile(np.arange(len(CATEGORIES)), n_cities)
    extra = max(n_merchants - len(base_city), 0)
    city = np.concatenate((base_city, rng.choice(n_cities, extra, p=city_w / city_w.sum())))
    category = np.concatenate((base_cat, rng.choice(len(CATEGORIES), extra, p=cat_w / cat_w.sum())))
    online_share = np.array([c.online_share for c in CATEGORIES])
    online = rng.random(len(city)) < online_share[category]
    online[: len(base_city)] = False
    # ATMs are merchants too (category "atm"), a fixed number per city.
    atm_city = np.repeat(np.arange(n_cities), ATMS_PER_CITY)
    city = np.concatenate((city, atm_city))
    category = np.concatenate((category, np.full(len(atm_city), ATM_CATEGORY_CODE)))
    online = np.concatenate((online, np.zeros(len(atm_city), dtype=bool)))
    dlat, dlon = _jitter(rng, len(city), km=8.0)
    lat = np.array([c.lat for c in CITIES])[city] + dlat
    lon = np.array([c.lon for c in CITIES])[city] + dlon
    risky_cat = np.array([c.high_risk for c in CATEGORIES] + [False])
    ids = np.arange(len(city))
    is_atm = category == ATM_CATEGORY_CODE
    physical = ids[~online & ~is_atm]
    return Merchants(
        category=category,
        city=city,
        lat=lat,
        lon=lon,
        online=online,
        physical_by_city=_group_by_city(physical, city),
        risky_by_city=_group_by_city(physical[risky_cat[category[physical]]], city),
        atm_by_city=_group_by_city(ids[is_atm], city),
        online_ids=ids[online],
        risky_online_ids=ids[online & risky_cat[category]],
    )


@dataclass(frozen=True)
class Cards:
    home_city: np.ndarray
    spend_multiplier: np.ndarray  # scales every category's typical amount
    daily_rate: np.ndarray  # expected transactions per day
    online_share: np.ndarray
    hour_shift: np.ndarray  # early birds and night owls
    wallet_share: np.ndarray  # share of in-store payments made with a phone wallet
    favourite_stores: np.ndarray  # (n, FAVOURITE_STORES) merchant ids in the home city
    favourite_shops: np.ndarray  # (n, FAVOURITE_SHOPS) online merchant ids
    devices: np.ndarray  # (n, 2) device ids; column 1 is -1 for single-device holders
    new_device: np.ndarray  # device id after a phone change, -1 if none
    new_device_from: np.ndarray  # epoch seconds of the phone change
    trip_city: np.ndarray  # -1 for holders who do not travel
    trip_start: np.ndarray
    trip_end: np.ndarray

    def __len__(self) -> int:
        return len(self.home_city)


def build_cards(
    rng: np.random.Generator,
    n_cards: int,
    merchants: Merchants,
    start: int,
    days: int,
    mean_daily_rate: float,
) -> Cards:
    city_w = np.array([c.weight for c in CITIES])
    home = rng.choice(len(CITIES), n_cards, p=city_w / city_w.sum())
    # Log-normal activity: most cards are used a little, a few a lot (mean = mean_daily_rate).
    rate = rng.lognormal(np.log(mean_daily_rate) - 0.5 * 0.6**2, 0.6, n_cards)
    home_rows = np.repeat(home, FAVOURITE_STORES)
    stores = pick_in_city(rng, merchants.physical_by_city, home_rows).reshape(n_cards, -1)
    shops = rng.choice(merchants.online_ids, (n_cards, FAVOURITE_SHOPS))
    devices = np.arange(2 * n_cards, dtype=np.int64).reshape(n_cards, 2)
    devices[rng.random(n_cards) < 0.6, 1] = -1
    # Legitimate behaviour that looks odd: a new phone, a trip far from home.
    changes_phone = rng.random(n_cards) < 0.12
    new_device = np.where(changes_phone, 2 * n_cards + np.arange(n_cards), -1)
    new_device_from = start + (rng.random(n_cards) * days * SECONDS_PER_DAY).astype(np.int64)
    travels = rng.random(n_cards) < 0.06
    trip_city = (home + rng.integers(1, len(CITIES), n_cards)) % len(CITIES)
    trip_city = np.where(travels, trip_city, -1)
    trip_start = start + (rng.random(n_cards) * days * SECONDS_PER_DAY).astype(np.int64)
    trip_end = trip_start + rng.integers(2, 11, n_cards) * SECONDS_PER_DAY
    return Cards(
        home_city=home,
        spend_multiplier=rng.lognormal(0.0, 0.45, n_cards),
        daily_rate=rate,
        online_share=rng.beta(2.0, 5.0, n_cards),
        hour_shift=rng.integers(-2, 3, n_cards),
        wallet_share=rng.beta(1.5, 4.0, n_cards),
        favourite_stores=stores,
        favourite_shops=shops,
        devices=devices,
        new_device=new_device,
        new_device_from=new_device_from,
        trip_city=trip_city,
        trip_start=trip_start,
        trip_end=trip_end,
    )


def city_centres() -> tuple[np.ndarray, np.ndarray]:
    return np.array([c.lat for c in CITIES]), np.array([c.lon for c in CITIES])


def typical_amount(category: np.ndarray) -> np.ndarray:
    medians = np.array([c.median_amount for c in CATEGORIES] + [100.0])
    return medians[category]


def amount_spread(category: np.ndarray) -> np.ndarray:
    sigmas = np.array([c.sigma for c in CATEGORIES] + [0.5])
    return sigmas[category]
