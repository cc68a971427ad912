"""SQL that generates the large tables (bookings, views) inside MariaDB.

MariaDB-only: rows come from the SEQUENCE engine (`seq_1_to_N`), which MySQL does not have.
Generating server-side with one `INSERT ... SELECT` per table avoids shipping millions of rows
over the wire and loads 1M bookings + 5M views in well under a minute on two cores.

Randomness is a pure function of (seed, salt, row number): CRC32 of a string, then a
multiplicative mix (CRC32 alone is affine over GF(2), so different salts would give correlated
draws). Only integer arithmetic and IEEE doubles are involved, so the same seed gives the same
rows. Dirt is placed by a permutation of the row numbers rather than by chance, so every kind of
dirt occurs an exact number of times (at least once) at any scale.

Bookings and browsing views take their hour in the order of their row numbers, so they are
inserted in time order, as a marketplace's application inserts them: a day's rows lie together
in the table, which is what makes reading a few days through the date index cheap
(rental_platform/spark/extract.py).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from itertools import pairwise

from rental_platform.seed.generate import LISTING_ID_BASE
from rental_platform.seed.scales import SeedScale

LISTING_PICK = "tmp_seed_listing_pick"
HOUR_PICK = "tmp_seed_hour_pick"

# Share of rows per kind of dirt (or noise). Each kind hits at least one row. Rejected rows
# stay well under the default quarantine-share limit (5%) at the demo scale and above.
BOOKING_DIRT = (
    ("user_null", 0.0025),
    ("apartment_null", 0.0025),
    ("booking_date_null", 0.0015),
    ("checkin_null", 0.0015),
    ("checkout_null", 0.0015),
    ("dates_reversed", 0.0025),  # checkout <= checkin
    ("checkin_before_booking", 0.0020),  # check-in 1..3 days before the day of booking_date
    ("total_null", 0.0015),
    ("total_negative", 0.0015),
    ("currency_invalid", 0.0050),  # BOOKING_INVALID_CURRENCIES in turn
    ("status_invalid", 0.0020),  # 'refunded', 'expired', NULL, '' in turn
    ("status_noise", 0.015),  # valid after lower/trim
    ("currency_noise", 0.010),  # casing/whitespace noise, valid after upper/trim
    ("orphan", 0.0050),  # apartment id not in apartments
    ("end_of_day", 0.002),  # booked at 23:59:59
)
VIEW_DIRT = (
    ("user_null", 0.0025),
    ("apartment_null", 0.0025),
    ("viewed_at_null", 0.003),
    ("orphan", 0.0050),
    ("duplicate", 0.015),  # exact copy of the previous row
)
# Booking currencies that are not a three-letter code after upper/trim, used in this order, so
# every one occurs once a scale has at least this many `currency_invalid` bookings (tiny has 8).
BOOKING_INVALID_CURRENCIES = ("U$D", "EURO", "", None, "US", "U S", "  ")
# Share of views that precede a booking ("funnel" views: same user and listing), roughly.
FUNNEL_SHARE = 0.4
# Repeat customers: this share of bookings/views come from this small share of users.
FREQUENT_ACTIVITY, FREQUENT_USERS = 0.35, 0.03


def _coprime_near(n: int, fraction: float) -> int:
    """An integer coprime with n near n * fraction (a multiplier that permutes 0..n-1)."""
    candidate = max(1, int(n * fraction))
    while math.gcd(candidate, n) != 1:
        candidate += 1
    return candidate


@dataclass(frozen=True)
class _Random:
    """Deterministic pseudo-random SQL expressions of (seed, salt, row-number expression)."""

    seed: int

    def _crc(self, salt: str, key: str) -> str:
        """CRC32 of 'seed:salt:key' (the key's parts joined by ':'). The prefix's CRC is
        computed here once, and the server continues it over the key alone (CRC32's
        two-argument form): the same value as hashing the whole string, without building it
        for each row (about 8% of a row's cost at `large`; the pick tables' lookups cost more)."""
        prefix = zlib.crc32(f"{self.seed}:{salt}:".encode())
        key = f"CONCAT_WS(':',{key})" if "," in key else key
        return f"((CRC32({prefix},{key}) * 2654435761) & 4294967295)"

    def u(self, salt: str, key: str) -> str:
        """A DOUBLE uniform in [0, 1)."""
        return f"({self._crc(salt, key)} * 2.3283064365386963e-10)"

    def below(self, salt: str, key: str, n: int) -> str:
        """An integer uniform in [0, n), in integer arithmetic: a BIGINT (not a DOUBLE) is
        several times cheaper to join on."""
        if not 0 < n < 2**32:
            raise ValueError(f"n out of range: {n}")
        return f"(({self._crc(salt, key)} * {n}) >> 32)"


class _Dirt:
    """Exact, disjoint ranges of a row-number permutation, one per kind of dirt."""

    def __init__(self, rows: int, kinds: tuple[tuple[str, float], ...], seed: int, salt: int):
        self.rows = rows
        # pos(n) = (n * mult + offset) mod rows is a bijection of 1..rows onto 0..rows-1; with
        # mult near rows/2, consecutive rows never share a (small) range.
        self.mult = _coprime_near(rows, 0.382 + (seed % 97) / 1000.0)
        self.offset = (seed * 7_919 + salt * 104_729) % rows
        self.ranges: dict[str, tuple[int, int]] = {}
        first = 0
        for kind, rate in kinds:
            count = max(1, round(rate * rows))
            self.ranges[kind] = (first, first + count - 1)
            first += count
        if first > rows // 4:
            raise ValueError(f"too few rows ({rows}) for the planned dirt")

    def pos(self, key: str) -> str:
        return f"(({key}) * {self.mult} + {self.offset}) % {self.rows}"

    def is_(self, kind: str, key: str) -> str:
        lo, hi = self.ranges[kind]
        return f"({self.pos(key)} BETWEEN {lo} AND {hi})"

    def counts(self) -> dict[str, int]:
        return {kind: hi - lo + 1 for kind, (lo, hi) in self.ranges.items()}

    def in_turn(self, kind: str, key: str, values: tuple[str | None, ...]) -> str:
        """One of `values` per row of `kind`, in turn from the first: the kind's n rows hold
        the first n values, and every value once n >= len(values)."""
        lo, _hi = self.ranges[kind]
        literals = ", ".join("NULL" if v is None else _quoted(v) for v in values)
        # (pos - lo) mod k without an unsigned subtraction that could go below zero.
        shift = -lo % len(values)
        return f"ELT(1 + ({self.pos(key)} + {shift}) % {len(values)}, {literals})"


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"not a plain SQL literal: {value!r}")
    return f"'{value}'"


def _user(r: _Random, scale: SeedScale, prefix: str, key: str) -> str:
    """A user id, skewed to repeat customers; ids are scrambled so they are not the low ones."""
    frequent = max(1, int(scale.users * FREQUENT_USERS))
    mult = _coprime_near(scale.users, 0.6180339887)
    index = (
        f"IF({r.u(prefix + 'f', key)} < {FREQUENT_ACTIVITY}, "
        f"{r.below(prefix + 'u', key, frequent)}, {r.below(prefix + 'u', key, scale.users)})"
    )
    return f"((({index}) * {mult}) % {scale.users} + 1)"


def _hour_slot(row: str, rows: int, hour_slots: int) -> str:
    """The hour pick slot of row number `row` of `rows`: slots are laid out in time order with
    as many per hour as the hour's weight, so rows spread over them in turn are in time order
    and still follow the weights."""
    return f"((({row}) - 1) * {hour_slots}) DIV {rows}"


def _orphan_id(r: _Random, scale: SeedScale, salt: str, key: str) -> str:
    return f"({LISTING_ID_BASE + scale.listings + 1} + {r.below(salt, key, 1000)})"


def _booked(r: _Random, d: _Dirt, key: str) -> str:
    """booking_date of booking `key`, before dirt; needs the hour pick joined as `hp`."""
    booked = f"(hp.hour_start + INTERVAL {r.below('bs', key, 3600)} SECOND)"
    eod = "TIMESTAMP(DATE(hp.hour_start), '23:59:59')"
    return f"IF({d.is_('end_of_day', key)}, {eod}, {booked})"


def _booked_apartment(r: _Random, d: _Dirt, scale: SeedScale, key: str) -> str:
    """apartment_id of booking `key`, before dirt; needs the listing pick joined as `lp`."""
    return f"IF({d.is_('orphan', key)}, {_orphan_id(r, scale, 'bo', key)}, lp.apartment_id)"


def booking_dirt(scale: SeedScale, seed: int) -> _Dirt:
    return _Dirt(scale.bookings, BOOKING_DIRT, seed, salt=1)


def bookings_sql(scale: SeedScale, seed: int, listing_slots: int, hour_slots: int) -> str:
    """INSERT ... SELECT for all bookings; needs the two pick tables (see `load.py`)."""
    r = _Random(seed)
    d = booking_dirt(scale, seed)
    n = "s.seq"
    lead = f"FLOOR(61 * POW({r.u('bl', n)}, 2))"  # 0..60 days, mostly short
    nights = f"IF({r.u('bw', n)} < 0.08, 7, 1 + FLOOR(14 * POW({r.u('bn', n)}, 2)))"  # 1..14
    checkin = (
        f"IF({d.is_('checkin_before_booking', n)},"
        f" DATE(hp.hour_start) - INTERVAL (1 + {r.below('bb', n, 3)}) DAY,"
        f" DATE(hp.hour_start) + INTERVAL {lead} DAY)"
    )
    checkout = (
        f"IF({d.is_('dates_reversed', n)}, {checkin} - INTERVAL {r.below('br', n, 3)} DAY, "
        f"{checkin} + INTERVAL {nights} DAY)"
    )
    total = f"ROUND(lp.nightly * {nights} * (0.95 + 0.1 * {r.u('bp', n)}), 2)"
    total = f"IF({d.is_('total_negative', n)}, -{total}, {total})"
    status_u = r.u("bx", n)
    status = (
        f"CASE WHEN {status_u} < 0.82 THEN 'confirmed' "
        f"WHEN {status_u} < 0.94 THEN 'cancelled' ELSE 'pending' END"
    )
    noisy_status = (
        f"ELT(1 + {r.below('bz', n, 6)}, 'Confirmed ', ' CANCELLED', 'Pending', 'CONFIRMED', "
        "' confirmed ', 'Cancelled')"
    )
    bad_status = d.in_turn("status_invalid", n, ("refunded", "expired", None, ""))
    status = (
        f"IF({d.is_('status_invalid', n)}, {bad_status}, "
        f"IF({d.is_('status_noise', n)}, {noisy_status}, {status}))"
    )
    noisy_currency = (
        f"ELT(1 + {r.below('bc', n, 3)}, CONCAT(' ', LOWER(lp.currency)), "
        "CONCAT(LEFT(lp.currency, 1), LOWER(SUBSTR(lp.currency, 2)), ' '), LOWER(lp.currency))"
    )
    bad_currency = d.in_turn("currency_invalid", n, BOOKING_INVALID_CURRENCIES)
    currency = (
        f"IF({d.is_('currency_invalid', n)}, {bad_currency}, "
        f"IF({d.is_('currency_noise', n)}, {noisy_currency}, lp.currency))"
    )

    def unless(kind: str, expr: str) -> str:
        return f"IF({d.is_(kind, n)}, NULL, {expr})"

    return f"""
INSERT INTO bookings (booking_id, user_id, apartment_id, booking_date, checkin_date,
                      checkout_date, total_price, currency, booking_status)
SELECT
  {n},
  {unless("user_null", _user(r, scale, "b", n))},
  {unless("apartment_null", _booked_apartment(r, d, scale, n))},
  {unless("booking_date_null", _booked(r, d, n))},
  {unless("checkin_null", checkin)},
  {unless("checkout_null", checkout)},
  {unless("total_null", total)},
  {currency},
  {status}
FROM seq_1_to_{scale.bookings} s
JOIN {LISTING_PICK} lp ON lp.slot = {r.below("ba", n, listing_slots)}
JOIN {HOUR_PICK} hp ON hp.slot = {_hour_slot(n, scale.bookings, hour_slots)}
"""


def funnel_views_per_booking(scale: SeedScale) -> int:
    """Most funnel views one booking gets (each gets 0..this many, uniformly): about
    FUNNEL_SHARE of all views, never more than all of them."""
    return max(0, min(3, int(2 * FUNNEL_SHARE * scale.views / scale.bookings)))


def funnel_views_sql(scale: SeedScale, seed: int) -> str:
    """INSERT ... SELECT of the views that precede a booking, from the loaded `bookings`.

    Each clean booking (user, listing and booking_date present) gets 0..N views by the same
    user of the same listing, up to a week before its booking_date and never before the range
    starts. A sequential scan of bookings (no random lookups) keeps this cheap; STRAIGHT_JOIN
    pins that plan.
    """
    r = _Random(seed)
    per_booking = funnel_views_per_booking(scale)
    key = "b.booking_id, s.seq"
    since_start = (
        f"TIMESTAMPDIFF(SECOND, TIMESTAMP'{scale.start.isoformat()} 00:00:00', b.booking_date)"
    )
    before = f"FLOOR(POW({r.u('vd', key)}, 2) * LEAST(604800, {since_start}))"
    cta_u = r.u("vc", key)
    cta = (
        f"CASE WHEN {cta_u} < 0.45 THEN 'book_now' WHEN {cta_u} < 0.75 THEN 'contact_owner' "
        "ELSE 'none' END"
    )
    return f"""
INSERT INTO user_viewing (user_id, apartment_id, viewed_at, is_wishlisted, call_to_action)
SELECT
  b.user_id,
  b.apartment_id,
  b.booking_date - INTERVAL {before} SECOND,
  IF({r.u("vw", key)} < 0.25, 1, 0),
  {cta}
FROM bookings b
STRAIGHT_JOIN seq_1_to_{max(per_booking, 1)} s
  ON s.seq <= {_views_of("b.booking_id", r, per_booking)}
WHERE b.user_id IS NOT NULL AND b.apartment_id IS NOT NULL AND b.booking_date IS NOT NULL
"""


def _views_of(booking_id: str, r: _Random, per_booking: int) -> str:
    return r.below("vn", booking_id, per_booking + 1)


def funnel_views_count_sql(scale: SeedScale, seed: int) -> str:
    """SELECT of how many rows `funnel_views_sql` will insert, without the bookings table.

    Lets the browsing views (which fill up to scale.views) load while bookings load.
    Mirrors the funnel's WHERE: booking fields are NULL exactly where booking dirt says so.
    """
    d = booking_dirt(scale, seed)
    clean = " AND ".join(
        f"NOT {d.is_(kind, 'seq')}" for kind in ("user_null", "apartment_null", "booking_date_null")
    )
    per_booking = funnel_views_per_booking(scale)
    return (
        f"SELECT COALESCE(SUM({_views_of('seq', _Random(seed), per_booking)}), 0)"
        f" FROM seq_1_to_{scale.bookings} WHERE {clean}"
    )


def row_ranges(rows: int, parts: int) -> list[tuple[int, int]]:
    """Row numbers 1..rows as up to `parts` ranges (first, last) of nearly equal size."""
    bounds = [rows * i // parts for i in range(parts + 1)]
    return [(low + 1, high) for low, high in pairwise(bounds) if high > low]


def browse_views_sql(
    scale: SeedScale,
    seed: int,
    rows: int,
    listing_slots: int,
    hour_slots: int,
    part: tuple[int, int] | None = None,
) -> str:
    """INSERT ... SELECT of the browsing views numbered `part` (first, last; all of them if
    None) of the `rows` browsing views (the rest after the funnel views).

    Listing by popularity, time by weekday/season/hour, users skewed to repeat visitors.
    Carries the views' dirt; a duplicate row is computed from the previous row number, so it
    is an exact copy.
    """
    r = _Random(seed)
    d = _Dirt(rows, VIEW_DIRT, seed, salt=2)
    first, last = part or (1, rows)
    k = "s.k"
    apartment = f"IF({d.is_('orphan', k)}, {_orphan_id(r, scale, 'vo', k)}, lp.apartment_id)"
    viewed_at = f"(hp.hour_start + INTERVAL {r.below('vs', k, 3600)} SECOND)"
    cta_u = r.u("vc", k)
    cta = (
        f"CASE WHEN {cta_u} < 0.75 THEN 'none' WHEN {cta_u} < 0.90 THEN 'contact_owner' "
        "ELSE 'book_now' END"
    )
    # Kept BIGINT UNSIGNED: IF(seq = 1, 2, seq - 1) would be DECIMAL, and slow everywhere.
    dup_of = f"seq + IF({d.is_('duplicate', 'seq')}, IF(seq = 1, 1, -1), 0)"
    # A LIMIT of all the part's rows keeps MariaDB from merging the derived table into the
    # query, where `k` would be computed again at each of its dozen uses: materialised (in
    # memory, see load._session, and in row order), it is computed once per row
    # (benchmarks/results/xlarge.md).
    rows_in_part = last - first + 1

    def unless(kind: str, expr: str) -> str:
        return f"IF({d.is_(kind, k)}, NULL, {expr})"

    return f"""
INSERT INTO user_viewing (user_id, apartment_id, viewed_at, is_wishlisted, call_to_action)
SELECT
  {unless("user_null", _user(r, scale, "v", k))},
  {unless("apartment_null", apartment)},
  {unless("viewed_at_null", viewed_at)},
  IF({r.u("vw", k)} < 0.06, 1, 0),
  {cta}
FROM (SELECT seq, {dup_of} AS k FROM seq_{first}_to_{last} LIMIT {rows_in_part}) s
JOIN {LISTING_PICK} lp ON lp.slot = {r.below("va", k, listing_slots)}
JOIN {HOUR_PICK} hp ON hp.slot = {_hour_slot(k, rows, hour_slots)}
"""
