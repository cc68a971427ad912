"""The small, hand-shaped part of the sample data, generated in Python.

Listings (a few thousand rows at most) need realistic, correlated fields -- price by city and
size, a two-state city name, a handful of each kind of dirt -- which is easy in Python and cheap
to insert. The large tables (bookings, views) are generated inside MariaDB (see `fill.py`); they
only need from here the popularity-weighted pick tables built by `listing_picks` and
`hour_picks`.

Everything is a pure function of (scale, seed): `random.Random` seeded with a string is stable
across Python versions, so the same seed gives the same rows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Generic, TypeVar

from rental_platform.seed.scales import SeedScale

# Listing ids start here; ids above the last listing are used for orphans.
LISTING_ID_BASE = 100_000


@dataclass(frozen=True)
class City:
    name: str
    state: str
    latitude: float
    longitude: float
    monthly_rent_usd: int  # typical one-bedroom asking rent
    popularity: float  # relative share of listings; bookings skew further towards it


# Same city name in two states on purpose: Springfield, Portland and Kansas City.
CITIES: tuple[City, ...] = (
    City("New York", "NY", 40.7128, -74.0060, 3400, 30.0),
    City("Los Angeles", "CA", 34.0522, -118.2437, 2700, 18.0),
    City("Chicago", "IL", 41.8781, -87.6298, 1900, 12.0),
    City("Austin", "TX", 30.2672, -97.7431, 1700, 9.0),
    City("Miami", "FL", 25.7617, -80.1918, 2400, 8.0),
    City("Seattle", "WA", 47.6062, -122.3321, 2200, 6.0),
    City("Boston", "MA", 42.3601, -71.0589, 2900, 5.0),
    City("Denver", "CO", 39.7392, -104.9903, 1800, 4.0),
    City("Atlanta", "GA", 33.7490, -84.3880, 1600, 3.5),
    City("Portland", "OR", 45.5152, -122.6784, 1600, 3.0),
    City("Phoenix", "AZ", 33.4484, -112.0740, 1400, 3.0),
    City("Nashville", "TN", 36.1627, -86.7816, 1600, 2.5),
    City("Columbus", "OH", 39.9612, -82.9988, 1200, 2.0),
    City("Springfield", "IL", 39.7817, -89.6501, 900, 1.5),
    City("Portland", "ME", 43.6591, -70.2568, 1500, 1.5),
    City("Springfield", "MA", 42.1015, -72.5898, 1200, 1.2),
    City("Kansas City", "MO", 39.0997, -94.5786, 1100, 1.0),
    City("Kansas City", "KS", 39.1141, -94.6275, 1000, 0.6),
)

SOURCES = (
    ("RentLingo", 40),
    ("RentDigs.com", 25),
    ("Listanza", 12),
    ("ListedBuy", 10),
    ("GoSection8", 8),
    ("RealRentals", 5),
)
AMENITIES = (
    "Dishwasher",
    "Parking",
    "Pool",
    "Gym",
    "Washer Dryer",
    "Refrigerator",
    "Patio/Deck",
    "AC",
    "Elevator",
    "Storage",
    "Doorman",
    "Internet Access",
)
STREETS = ("Main", "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park")
STREET_KINDS = ("St", "Ave", "Blvd", "Rd", "Ln", "Dr")
# Rough exchange rates from USD, so EUR/GBP listings carry plausible amounts.
CURRENCIES = (("USD", 1.0, "$", 90), ("EUR", 0.92, "\u20ac", 6), ("GBP", 0.79, "\u00a3", 4))
BATHROOMS = {0: (1.0,), 1: (1.0, 1.0, 1.5), 2: (1.0, 1.5, 2.0, 2.0), 3: (2.0, 2.5), 4: (2.5, 3.0)}
BEDROOM_WORDS = {0: "Studio", 1: "One BR", 2: "Two BR", 3: "Three BR", 4: "Four BR"}

# Dirt in listings, as a share of listings; each kind hits at least one listing at any scale.
LISTING_DIRT = (
    ("price_null", 0.0040),
    ("price_zero", 0.0025),
    ("price_negative", 0.0015),
    ("currency_null", 0.0025),
    ("currency_empty", 0.0025),
    ("currency_invalid", 0.0025),  # LISTING_INVALID_CURRENCIES in turn
    ("created_null", 0.0040),
    ("no_attributes", 0.015),
    ("location_null", 0.010),
    # noise the curated layer must normalise, not quarantine
    ("currency_noise", 0.030),
    ("active_null", 0.020),
)
# Dirt the curated rules quarantine a listing for. Such a listing gets little traffic (without a
# valid price it hardly sells), so that its bookings -- quarantined as unknown_apartment -- stay
# a small share at every scale, whichever listings the dirt happens to hit.
QUARANTINED_LISTING_DIRT = frozenset(
    ("price_null", "price_zero", "price_negative", "currency_null", "currency_empty",
     "currency_invalid", "created_null")
)  # fmt: skip
QUARANTINED_WEIGHT = 0.2
CURRENCY_NOISE = (" usd", "Eur ", "gbp", " GBP ", "usd ")
# Not a three-letter code after upper/trim, though not blank either.
LISTING_INVALID_CURRENCIES = ("EURO", "U$D", "US", "U S")


@dataclass(frozen=True)
class Listing:
    """One listing: the rows for `apartments` and `apartment_attributes` plus pick inputs."""

    apartment: tuple[object, ...]
    attributes: tuple[object, ...] | None
    nightly: str  # clean nightly price in the listing's currency, for bookings
    currency: str  # clean ISO code, for bookings
    weight: float  # relative booking/view popularity

    @property
    def listing_id(self) -> int:
        return int(str(self.apartment[0]))


_Item = TypeVar("_Item")


@dataclass(frozen=True)
class _Weighted(Generic[_Item]):
    """Items and their running weight totals, summed once: `random.choices` with `cum_weights`
    draws exactly what it draws with `weights`, without summing them again on every call."""

    items: tuple[_Item, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, pairs: tuple[tuple[_Item, float], ...]) -> _Weighted[_Item]:
        return cls(tuple(item for item, _ in pairs), tuple(accumulate(w for _, w in pairs)))

    def draw(self, rng: random.Random) -> _Item:
        return rng.choices(self.items, cum_weights=self.cumulative)[0]


_CITY = _Weighted.of(tuple((city, city.popularity) for city in CITIES))
_BEDROOMS = _Weighted.of(((0, 12), (1, 38), (2, 32), (3, 14), (4, 4)))
_CURRENCY = _Weighted.of(tuple((currency, currency[3]) for currency in CURRENCIES))
_SOURCE = _Weighted.of(SOURCES)
_PETS = _Weighted.of((("Cats,Dogs", 40), ("Cats", 10), ("Dogs", 5), ("None", 30), (None, 15)))
_HAS_PHOTO = _Weighted.of((("Yes", 70), ("Thumbnail", 20), ("No", 10)))


def listing_dirt_counts(listings: int) -> dict[str, int]:
    """How many listings get each kind of dirt: exact, at least one each."""
    return {kind: max(1, round(rate * listings)) for kind, rate in LISTING_DIRT}


def _dirt_assignment(rng: random.Random, n: int, reserved: int) -> dict[int, str]:
    """Disjoint listing indices per dirt kind; at least one each, away from the first
    `reserved` listings (which guarantee every city, incl. both Springfields, is present)."""
    counts = listing_dirt_counts(n)
    total = sum(counts.values())
    pool = range(reserved, n) if n - reserved >= total else range(n)
    chosen = rng.sample(pool, total)
    out: dict[int, str] = {}
    for kind, count in counts.items():
        for _ in range(count):
            out[chosen.pop()] = kind
    return out


def _money(x: float) -> str:
    return f"{x:.2f}"


def generate_listings(scale: SeedScale, seed: int) -> list[Listing]:
    """All listings, deterministic for (scale, seed)."""
    rng = random.Random(f"{seed}:listings")
    n = scale.listings
    start = datetime.combine(scale.start, datetime.min.time())
    end = datetime.combine(scale.end, datetime.min.time())
    range_seconds = int((end - start).total_seconds())
    # A stream of its own: a new kind of dirt moves which listings are dirty, not their fields.
    dirt = _dirt_assignment(random.Random(f"{seed}:listing_dirt"), n, reserved=len(CITIES))
    listings: list[Listing] = []
    location_nulls = invalid_currencies = 0
    for i in range(n):
        listing_id = LISTING_ID_BASE + i + 1
        city = CITIES[i] if i < len(CITIES) else _CITY.draw(rng)
        kind = dirt.get(i)
        bedrooms = _BEDROOMS.draw(rng)
        bathrooms = rng.choice(BATHROOMS[bedrooms])
        square_feet = int(380 + 330 * bedrooms + rng.gauss(0, 90))
        code, rate, symbol, _ = _CURRENCY.draw(rng)
        size_factor = 0.65 + 0.35 * bedrooms if bedrooms else 0.72
        monthly_usd = city.monthly_rent_usd * size_factor * rng.lognormvariate(0.0, 0.18)
        weekly = rng.random() < 0.05
        amount = monthly_usd * rate / (4.3 if weekly else 1.0)
        amount = round(amount) if weekly else round(amount / 5) * 5
        nightly = (amount / 7.0 if weekly else amount / 30.0) * rng.uniform(1.1, 1.45)

        price: str | None = _money(amount)
        if kind == "price_null":
            price = None
        elif kind == "price_zero":
            price = "0.00"
        elif kind == "price_negative":
            price = _money(-amount)
        currency: str | None = code
        if kind == "currency_null":
            currency = None
        elif kind == "currency_empty":
            currency = rng.choice(("", "  "))
        elif kind == "currency_invalid":
            currency = LISTING_INVALID_CURRENCIES[
                invalid_currencies % len(LISTING_INVALID_CURRENCIES)
            ]
            invalid_currencies += 1
        elif kind == "currency_noise":
            currency = rng.choice(CURRENCY_NOISE)
        if rng.random() < 0.78:  # most listings predate the range, some appear within it
            created = start - timedelta(seconds=rng.randrange(2 * 365 * 86400))
        else:
            created = start + timedelta(seconds=rng.randrange(range_seconds))
        modified = created + timedelta(
            seconds=rng.randrange(max(1, int((end - created).total_seconds())))
        )
        created_on: datetime | None = None if kind == "created_null" else created
        active = rng.random() < 0.88
        is_active: int | None = None if kind == "active_null" else int(active)
        word = BEDROOM_WORDS[bedrooms]
        street = f"{rng.randrange(1, 9999)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
        title = f"{word} apartment in {city.name}, {street}" if bedrooms else f"Studio on {street}"
        source = _SOURCE.draw(rng)
        apartment = (listing_id, title, source, price, currency, created_on, is_active, modified)

        attributes: tuple[object, ...] | None = None
        if kind != "no_attributes":
            amenities = sorted(rng.sample(AMENITIES, rng.randrange(0, 6)))
            pets = _PETS.draw(rng)
            has_photo = _HAS_PHOTO.draw(rng)
            display = f"{symbol}{amount:,.0f}" + (" Weekly" if weekly else "")
            cityname: str | None = city.name
            state: str | None = city.state
            if kind == "location_null":
                # both missing, then the city only, then the state only, in turn
                which = location_nulls % 3
                location_nulls += 1
                cityname = None if which in (0, 1) else cityname
                state = None if which in (0, 2) else state
            body = (
                f"{title}. {square_feet} sq ft, {bathrooms:g} bath"
                + (f", {', '.join(amenities).lower()}" if amenities else "")
                + ". Contact us to schedule a viewing."
            )
            attributes = (
                listing_id,
                "housing/rent/apartment",
                body,
                ",".join(amenities) if amenities else None,
                f"{bathrooms:.1f}",
                f"{bedrooms:.1f}",
                "0.00" if rng.random() < 0.9 else None,
                has_photo,
                pets,
                display,
                "Weekly" if weekly else "Monthly",
                square_feet,
                street if rng.random() < 0.85 else None,
                cityname,
                state,
                f"{city.latitude + rng.gauss(0, 0.04):.7f}",
                f"{city.longitude + rng.gauss(0, 0.05):.7f}",
            )
        weight = (
            math.sqrt(city.popularity) * rng.lognormvariate(0.0, 0.6) * (1.0 if active else 0.3)
        )
        if kind in QUARANTINED_LISTING_DIRT:
            weight *= QUARANTINED_WEIGHT
        listings.append(Listing(apartment, attributes, _money(nightly), code, weight))
    return listings


def listing_picks(
    listings: list[Listing], slots_per_listing: int = 24
) -> list[tuple[int, int, int, str, str]]:
    """(apartment_id, first_slot, slot_count, nightly, currency) per listing.

    Drawing a uniform slot in [0, total) then picks a listing in proportion to its weight:
    popular cities and listings get most bookings and views. Every listing gets a slot.
    """
    total_weight = sum(item.weight for item in listings)
    target = slots_per_listing * len(listings)
    rows = []
    first = 0
    for item in listings:
        count = max(1, round(item.weight / total_weight * target))
        rows.append((item.listing_id, first, count, item.nightly, item.currency))
        first += count
    return rows


# Bookings and views per weekday (Monday first): weekends are busier.
WEEKDAY_FACTOR = (0.88, 0.84, 0.9, 0.98, 1.15, 1.32, 1.25)
# Share of daily activity per UTC hour: quiet at night, evening peak.
HOUR_FACTOR = (
    2, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 7, 7, 6, 6, 6, 7, 8, 9, 9, 8, 6, 4,
)  # fmt: skip


def day_factor(day: date) -> float:
    """Seasonality: a summer peak, a December bump, a quiet late January, times the weekday."""
    doy = day.timetuple().tm_yday
    season = 1.0 + 0.3 * math.sin(2 * math.pi * (doy - 100) / 365.0)
    if day.month == 12:
        season *= 1.15
    return season * WEEKDAY_FACTOR[day.weekday()]


def hour_picks(scale: SeedScale, slots_per_hour: int = 12) -> list[tuple[int, int, int]]:
    """(hour_index, first_slot, slot_count) for every hour of the range, weighted by
    weekday, season and hour of day."""
    rows = []
    first = 0
    for d in range(scale.days):
        factor = day_factor(scale.start + timedelta(days=d))
        for h in range(24):
            count = max(1, round(factor * HOUR_FACTOR[h] * slots_per_hour / 5.0))
            rows.append((d * 24 + h, first, count))
            first += count
    return rows
