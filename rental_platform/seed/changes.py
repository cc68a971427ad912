"""One night of a live marketplace, played against a source database: every kind of change
a nightly run must pick up, for the soak test and the nightly benchmark.

The platform only ever reads the source. This module plays the application, so it writes: call
`play_night(connection, day, seed=...)` after the day `day` has ended and before the nightly run
for `day`. Each night applies every kind of change in `KINDS` (when the source has rows to change)
and returns a `NightLog` of what it changed, to debug a failure.

Days, relative to `day` (D) and `horizon_days` (H):
- new rows fall on D;
- changes "within the horizon" touch days D-H+1 .. D (old day and new day);
- changes "older than the horizon" (beyond_horizon=True) touch days up to D-H-1.
Day D-H itself is never touched, so the platform's horizon may include it or not. Late changes
(status, moves, deletions, late views) put their first row on a day more than LOOKBACK_DAYS before
D when there is one, so a run that only re-reads the last few days misses it.

Listings held back from the source until a later night -- one that bookings reference before it
exists, one that disappears and comes back -- wait in two tables of the application's own,
PENDING_TABLES, in the same database (the platform reads only the contract's four tables).

Deterministic: the same source, seed and day give the same rows. Random draws come from
`random.Random(f"{seed}:{day}")`; rows are sampled in SQL by a hash of (seed, day, key) with the
key as tie-break. Efficient on a large source: a handful of indexed range reads, and every write
is one batched statement per table (executemany of multi-row INSERTs, upserts by key, IN lists).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any, NamedTuple

from rental_platform.seed import fill, generate
from rental_platform.seed.load import (
    APARTMENT_COLUMNS,
    ATTRIBUTE_COLUMNS,
    BOOKING_COLUMNS,
    PENDING_TABLES,
    VIEW_COLUMNS,
    insert_sql,
)

# What a night changes. Every night has each kind (given rows to change) except: the two
# "listing_appeared"/"listing_returned" need earlier nights (LATE_LISTING_NIGHTS and
# RETURN_NIGHTS before), and BEYOND_HORIZON_KINDS need beyond_horizon=True and older rows.
KINDS: dict[str, str] = {
    "new_booking_dirt": "a new booking on D with dirt (key: booking_id, new: kind of dirt)",
    "new_view_dirt": "a new view on D with dirt, or one of a duplicate pair (new: kind)",
    "early_booking": "a new booking of a listing that does not exist yet (new: listing id)",
    "booking_confirmed": "pending -> confirmed, an earlier day within the horizon",
    "booking_cancelled": "confirmed -> cancelled, an earlier day within the horizon",
    "booking_moved_earlier": "booking_date moved to an earlier day (old -> new day)",
    "booking_moved_later": "booking_date moved to a later day (old -> new day)",
    "booking_undated": "booking_date set to null (old day -> None)",
    "booking_dated": "a null booking_date given a day within the horizon (None -> new day)",
    "booking_deleted": "a booking deleted",
    "view_late": "a view inserted on an earlier day within the horizon",
    "view_deleted": "a view deleted (one copy of it)",
    "view_duplicate_deleted": "one of a pair (or more) of exact duplicate views deleted",
    "listing_price": "a listing's price changed (old -> new)",
    "listing_active": "a listing's is_active flipped (old -> new)",
    "listing_title": "a listing's title changed (old -> new)",
    "listing_city": "a listing's (state, cityname) changed (old -> new)",
    "listing_planned": "a listing created, held back until a later night (new: appears on)",
    "listing_removed": "a listing deleted from the source (new: the night it returns)",
    "listing_appeared": "a planned listing inserted, after bookings referenced it",
    "listing_returned": "a removed listing inserted again",
    "old_booking_confirmed": "pending -> confirmed, a day older than the horizon",
    "old_booking_cancelled": "confirmed -> cancelled, a day older than the horizon",
    "old_booking_deleted": "a booking deleted, a day older than the horizon",
    "old_view_deleted": "a view deleted, a day older than the horizon",
    "booking_moved_into_horizon": "booking_date moved from older than the horizon into it",
    "booking_moved_out_of_horizon": "booking_date moved from the horizon to an older day",
}
BEYOND_HORIZON_KINDS = frozenset(
    (
        "old_booking_confirmed",
        "old_booking_cancelled",
        "old_booking_deleted",
        "old_view_deleted",
        "booking_moved_into_horizon",
        "booking_moved_out_of_horizon",
    )
)
LATER_NIGHT_KINDS = frozenset(("listing_appeared", "listing_returned"))

LOOKBACK_DAYS = 3
# A listing planned on night D appears on night D + LATE_LISTING_NIGHTS; one removed on night D
# returns on night D + RETURN_NIGHTS.
LATE_LISTING_NIGHTS = 2
RETURN_NIGHTS = 3
# Planned listings get id LATE_LISTING_ID_BASE + D's ordinal: fresh, far above the seeded ids.
LATE_LISTING_ID_BASE = 10_000_000
# Dirty new bookings point orphans here: never a listing.
ORPHAN_ID_BASE = 9_000_000
# Kinds of dirt of the new rows, used in turn (starting at a place that moves every night).
NEW_BOOKING_DIRT = (
    "checkin_before_booking",
    "currency_invalid",
    "status_noise",
    "currency_noise",
    "user_null",
    "orphan",
)
NEW_VIEW_DIRT = ("user_null", "apartment_null", "viewed_at_null", "wishlist_null")
TITLE_TAGS = ("Newly renovated", "Price reduced", "Available now", "Pet friendly")
# Consecutive days the beyond-horizon changes are drawn from.
OLD_WINDOW_DAYS = 7
# Days the deleted views are drawn from: few, so that reading their times stays cheap.
VIEW_DELETION_DAYS = 7
# Bookings read per pending booking wanted (see _sample_size).
PENDING_SAMPLE = 20
# View times read per exact duplicate wanted: on a large source most times shared by two views
# are two different views.
TIMES_PER_DUPLICATE = 200


@dataclass(frozen=True)
class NightScale:
    """How much happens in one night; all counts are per night, and per kind where a field
    covers several kinds (moves: each direction; undated: each of undated and dated)."""

    bookings: int  # new bookings made on D
    views: int  # new views on D, the duplicates included
    dirty_bookings: int  # of the new bookings, with NEW_BOOKING_DIRT in turn
    dirty_views: int  # of the new views, with NEW_VIEW_DIRT in turn
    duplicate_views: int  # of the new views, exact copies of another new view
    early_bookings: int  # of the new bookings, of the listing planned tonight
    confirmations: int
    cancellations: int
    moves: int
    undated: int
    deletions: int
    late_views: int
    deleted_views: int
    listing_changes: int  # per attribute: price, is_active, title, city
    old_changes: int  # per beyond-horizon kind
    # 0: late changes fall on any day of the horizon alike. Else they fall on the last
    # `recent_days` days, as late confirmations and cancellations mostly do, but for one in
    # RECENT_EXCEPTIONS (and the first of each kind, beyond the lookback), anywhere in it.
    recent_days: int = 0

    def __post_init__(self) -> None:
        if min(vars(self).values()) < 0:
            raise ValueError("night counts must not be negative")
        if self.bookings < self.dirty_bookings + self.early_bookings:
            raise ValueError("bookings must cover dirty_bookings + early_bookings")
        if self.views < self.dirty_views + 2 * self.duplicate_views:
            raise ValueError("views must cover dirty_views and duplicate_views, twice")
        if 0 < self.recent_days <= LOOKBACK_DAYS + 1:
            raise ValueError(f"recent_days must be 0 or above {LOOKBACK_DAYS + 1}")

    @property
    def sample_size(self) -> int:
        """Bookings of the horizon to read, to choose the night's changes from."""
        others = self.cancellations + 2 * self.moves + self.undated + self.deletions
        return _sample_size(self.confirmations, others + self.old_changes)

    @property
    def old_sample_size(self) -> int:
        """Bookings older than the horizon to read (beyond_horizon only)."""
        return _sample_size(self.old_changes, 3 * self.old_changes)


def _sample_size(pending: int, others: int) -> int:
    """About 6% of bookings are pending: PENDING_SAMPLE rows per pending one wanted find them
    (at least 10 wanted, for small scales' luck); other changes take any booking."""
    return PENDING_SAMPLE * max(pending, 10) + 2 * others


NIGHT_SCALES: dict[str, NightScale] = {
    # for tests, against the `tiny` seed scale (about 70 bookings and 290 views a day)
    "small": NightScale(
        bookings=70,
        views=280,
        dirty_bookings=2,
        dirty_views=2,
        duplicate_views=1,
        early_bookings=1,
        confirmations=3,
        cancellations=3,
        moves=2,
        undated=1,
        deletions=2,
        late_views=10,
        deleted_views=3,
        listing_changes=1,
        old_changes=1,
    ),
    # a night of the `large` seed scale: 1M bookings and 5M views over 365 days, 20k listings
    "large": NightScale(
        bookings=3_000,
        views=15_000,
        dirty_bookings=30,
        dirty_views=60,
        duplicate_views=100,
        early_bookings=3,
        confirmations=300,
        cancellations=150,
        moves=30,
        undated=5,
        deletions=30,
        late_views=600,
        deleted_views=150,
        listing_changes=25,
        old_changes=20,
        recent_days=14,
    ),
}
# With recent_days, one late change in this many falls anywhere in the horizon.
RECENT_EXCEPTIONS = 20


@dataclass(frozen=True)
class Change:
    """One changed row. `key` is a booking_id, a listing id, or a view's five column values;
    `day` is the row's day before the change (None: it had none)."""

    kind: str
    key: Any
    day: date | None = None
    old: Any = None
    new: Any = None


@dataclass
class NightLog:
    """What one night changed: the new rows on `day`, and every other change row by row."""

    day: date
    new_bookings: range  # booking ids added on `day`
    new_views: int
    changes: list[Change] = field(default_factory=list)

    def of(self, kind: str) -> list[Change]:
        if kind not in KINDS:
            raise KeyError(kind)
        return [change for change in self.changes if change.kind == kind]

    def counts(self) -> Counter[str]:
        return Counter(change.kind for change in self.changes)

    def summary(self) -> str:
        """One line per kind, for a failing test's message."""
        bookings = self.new_bookings
        lines = [
            f"night of {self.day}: {len(bookings)} new bookings"
            f" ({bookings.start}..{bookings.stop - 1}), {self.new_views} new views"
        ]
        for kind, count in sorted(self.counts().items()):
            first = self.of(kind)[0]
            lines.append(
                f"  {kind}: {count} (first: {first.key!r} of {first.day},"
                f" {first.old!r} -> {first.new!r})"
            )
        return "\n".join(lines)


class _Booking(NamedTuple):
    """A bookings row, columns in BOOKING_COLUMNS order."""

    booking_id: int
    user_id: int | None
    apartment_id: int | None
    booking_date: datetime | None
    checkin_date: date | None
    checkout_date: date | None
    total_price: Decimal | None
    currency: str | None
    booking_status: str | None

    @property
    def day(self) -> date | None:
        return None if self.booking_date is None else self.booking_date.date()

    @property
    def status(self) -> str:
        return (self.booking_status or "").strip(" ").lower()


class _Listing(NamedTuple):
    """A listing that passes the curated rules, with what the night's changes need."""

    id: int
    title: str | None
    price: Decimal
    currency: str  # upper/trimmed
    is_active: int | None
    has_attributes: bool
    cityname: str | None
    state: str | None

    @property
    def nightly(self) -> float:
        """What a night costs: a month's asking price / 30, a little more (as the seed)."""
        return float(self.price) / 30.0 * 1.25


View = tuple[int | None, int | None, datetime | None, int | None, str | None]


def play_night(
    connection: Any,
    day: date,
    *,
    seed: int,
    horizon_days: int = 120,
    beyond_horizon: bool = False,
    scale: NightScale = NIGHT_SCALES["small"],
) -> NightLog:
    """Apply one night of changes for the day `day` that just ended, commit, and log them.

    `connection` is a pymysql connection to the source database, with write rights.
    """
    if horizon_days < LOOKBACK_DAYS + 2:
        raise ValueError(f"horizon_days must be at least {LOOKBACK_DAYS + 2}")
    try:
        with connection.cursor() as cursor:
            night = _Night(cursor, day, seed, horizon_days, scale)
            log = night.play(beyond_horizon)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return log


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min)


_HOUR_WEIGHTS = list(accumulate(generate.HOUR_FACTOR))


_NEW_STATUSES = ("confirmed", "cancelled", "pending")
_NEW_STATUS_WEIGHTS = (82, 94, 100)  # cumulative, as the seed's shares


class _Night:
    """One night: the cursor, the random stream, the rows read, and the log being written."""

    def __init__(
        self, cursor: Any, day: date, seed: int, horizon_days: int, scale: NightScale
    ) -> None:
        self.cursor = cursor
        self.day = day
        self.seed = seed
        self.scale = scale
        self.rng = random.Random(f"{seed}:{day.isoformat()}")
        self.first = day - timedelta(days=horizon_days - 1)  # first day within the horizon
        self.old_before = day - timedelta(days=horizon_days)  # older days are before this
        self.changes: list[Change] = []
        self.taken: set[int] = set()  # bookings given a change tonight
        self.updates: list[_Booking] = []  # new versions of changed bookings
        self.deletions: list[int] = []
        self.users: list[int] = []  # recent customers, ascending
        self.popular: list[int] = []  # listings of recent bookings, as often as booked
        self.listings: dict[int, _Listing] = {}  # bookable tonight
        self.released: set[int] = set()  # listings that appeared or returned tonight

    def play(self, beyond_horizon: bool) -> NightLog:
        """Listings due tonight first (they are bookable tonight), then every read, then every
        write: no row written tonight is a candidate for another change tonight."""
        _ensure_pending_tables(self.cursor)
        self.release_listings()
        listings = self.read_listings()
        sample = self.read_sample()
        undated = self.read_bookings("booking_date IS NULL", (), self.scale.undated)
        old_window = self.old_window() if beyond_horizon else None
        old = self.read_bookings_of(*old_window, self.scale.old_sample_size) if old_window else []
        views = self.read_views_to_delete(old_window)
        next_id = self.scalar("SELECT COALESCE(MAX(booking_id), 0) + 1 FROM bookings")

        late_listing = self.change_listings(listings)
        active = [item for item in self.listings.values() if item.is_active == 1]
        self.users = sorted({row.user_id for row in sample if row.user_id is not None}) or [1]
        self.popular = [row.apartment_id for row in sample if row.apartment_id in self.listings]
        self.change_bookings(sample, undated, old, old_window)
        self.delete_views(views)
        bookings = self.new_bookings(next_id, active or list(self.listings.values()), late_listing)
        new_views = self.new_views(bookings)
        self.late_views()
        return NightLog(self.day, range(next_id, next_id + len(bookings)), new_views, self.changes)

    # --- reading ---------------------------------------------------------------------------

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cursor.execute(sql, params)
        return self.cursor.fetchone()[0]

    def hash_order(self, *columns: str) -> str:
        """ORDER BY a hash of (seed, day, columns), then the columns: a random order that the
        same rows, seed and day always give."""
        key = ", ".join(columns)
        return f"ORDER BY CRC32(CONCAT_WS(':', '{self.seed}', '{self.day}', {key})), {key}"

    def read_listings(self) -> list[_Listing]:
        """Listings the curated rules keep (a clean price, currency and creation time)."""
        self.cursor.execute(
            "SELECT a.id, a.title, a.price, UPPER(TRIM(a.currency)), a.is_active,"
            " t.id IS NOT NULL, t.cityname, t.state"
            " FROM apartments a LEFT JOIN apartment_attributes t ON t.id = a.id"
            " WHERE a.price > 0 AND a.listing_created_on IS NOT NULL"
            " AND UPPER(TRIM(a.currency)) REGEXP '^[A-Z]{3}$' ORDER BY a.id"
        )
        return [_Listing(*row[:5], bool(row[5]), *row[6:]) for row in self.cursor.fetchall()]

    def read_bookings(self, where: str, params: Sequence[Any], limit: int) -> list[_Booking]:
        """A random sample of the bookings matching `where` (a condition on booking_date):
        ids from the booking_date index alone, then only those rows. A source's rows are in
        id order, not date order: reading every row of a range of days is slow."""
        self.cursor.execute(
            f"SELECT booking_id FROM bookings WHERE {where} {self.hash_order('booking_id')}"
            " LIMIT %s",
            (*params, limit),
        )
        ids = [row[0] for row in self.cursor.fetchall()]
        if not ids:
            return []
        self.cursor.execute(
            f"SELECT {', '.join(BOOKING_COLUMNS)} FROM bookings"
            f" WHERE booking_id IN ({', '.join(['%s'] * len(ids))})",
            ids,
        )
        rows = {row[0]: _Booking(*row) for row in self.cursor.fetchall()}
        return [rows[booking_id] for booking_id in ids]

    @property
    def recent_first(self) -> date:
        """The first day late changes mostly fall on (see NightScale.recent_days)."""
        if not self.scale.recent_days:
            return self.first
        return max(self.first, self.day - timedelta(days=self.scale.recent_days))

    def read_sample(self) -> list[_Booking]:
        """Bookings of the horizon to change tonight: of its recent days, and a few of any,
        shuffled together. Each kind of change takes its rows from the front, so the few of
        any day must not come first: about one change in RECENT_EXCEPTIONS falls there."""
        size = self.scale.sample_size
        if self.recent_first == self.first:
            return self.read_bookings_of(self.first, self.day, size)
        anywhere = self.read_bookings_of(self.first, self.day, max(1, size // RECENT_EXCEPTIONS))
        recent = self.read_bookings_of(self.recent_first, self.day, size)
        seen = {row.booking_id for row in anywhere}
        sample = anywhere + [row for row in recent if row.booking_id not in seen]
        return self.rng.sample(sample, len(sample))

    def read_bookings_of(self, start: date, end: date, limit: int) -> list[_Booking]:
        """A random sample of the bookings made on days [start, end)."""
        return self.read_bookings(
            "booking_date >= %s AND booking_date < %s", (_day_start(start), _day_start(end)), limit
        )

    def old_window(self) -> tuple[date, date] | None:
        """Up to OLD_WINDOW_DAYS consecutive days [start, end) older than the horizon, at
        random among the source's days; None when the source has no day that old."""
        earliest = self.scalar("SELECT MIN(booking_date) FROM bookings")
        if earliest is None or earliest.date() >= self.old_before:
            return None
        last_start = max(earliest.date(), self.old_before - timedelta(days=OLD_WINDOW_DAYS))
        start = self.random_day(earliest.date(), last_start)
        return start, min(start + timedelta(days=OLD_WINDOW_DAYS), self.old_before)

    def read_views_to_delete(self, old_window: tuple[date, date] | None) -> dict[str, list]:
        """(view, copies) to delete, per kind: one with exact duplicates, single views of a
        few days of the horizon, views of the old window."""
        beyond_lookback = self.late_days(1)
        others = [d for d in self.days(self.recent_first, self.day) if d not in beyond_lookback]
        others = self.rng.sample(others, min(len(others), VIEW_DELETION_DAYS - 1))
        picked = {
            "view_duplicate_deleted": self.read_duplicate_view(),
            "view_deleted": self.read_views(beyond_lookback, 1)
            + self.read_views(others, self.scale.deleted_views - 1),
        }
        if old_window:
            picked["old_view_deleted"] = self.read_views(
                self.days(*old_window), self.scale.old_changes
            )
        return picked

    def read_duplicate_view(self) -> list[tuple[View, int]]:
        """A view with exact duplicates: of yesterday, where the last night put
        duplicate_views of them among few views sharing a time by chance, else of the week."""
        yesterday = self.day - timedelta(days=1)
        week = self.days(max(self.first, self.day - timedelta(days=7)), self.day)
        return self.read_views([yesterday], 1, duplicated=True) or self.read_views(
            week, 1, duplicated=True
        )

    def read_views(
        self, days: Iterable[date], limit: int, *, duplicated: bool = False
    ) -> list[tuple[View, int]]:
        """A random sample of the distinct views of `days` (only those with exact duplicates,
        if `duplicated`), each with its number of copies. Times first, from the viewed_at
        index alone (copies share their time), then only the views at those times: the
        views of a range of days are scattered over a large table."""
        days = sorted(set(days))
        if not days or limit <= 0:
            return []
        ranges = " OR ".join(["(viewed_at >= %s AND viewed_at < %s)"] * len(days))
        bounds = [t for d in days for t in (_day_start(d), _day_start(d + timedelta(days=1)))]
        having = " HAVING COUNT(*) > 1" if duplicated else ""
        self.cursor.execute(
            f"SELECT viewed_at FROM user_viewing WHERE {ranges} GROUP BY viewed_at{having}"
            f" {self.hash_order('viewed_at')} LIMIT %s",
            (*bounds, limit * (TIMES_PER_DUPLICATE if duplicated else 1)),
        )
        times = [row[0] for row in self.cursor.fetchall()]
        if not times:
            return []
        columns = ", ".join(VIEW_COLUMNS)
        self.cursor.execute(
            f"SELECT {columns}, COUNT(*) FROM user_viewing"
            f" WHERE viewed_at IN ({', '.join(['%s'] * len(times))}) GROUP BY {columns}{having}"
            f" {self.hash_order(*VIEW_COLUMNS)} LIMIT %s",
            (*times, limit),
        )
        return [(tuple(row[:5]), int(row[5])) for row in self.cursor.fetchall()]

    # --- days and times --------------------------------------------------------------------

    @staticmethod
    def days(start: date, end: date) -> list[date]:
        """The days [start, end)."""
        return [start + timedelta(days=i) for i in range((end - start).days)]

    def random_day(self, start: date, end: date) -> date:
        """A day in [start, end]."""
        return start + timedelta(days=self.rng.randint(0, (end - start).days))

    def late_day_start(self) -> date:
        """Where a late change's day is drawn from: the recent days, or, once in a while, any."""
        if self.rng.randrange(RECENT_EXCEPTIONS) == 0:
            return self.first
        return self.recent_first

    def late_days(self, count: int) -> list[date]:
        """`count` earlier days within the horizon, the first beyond the lookback."""
        if count <= 0:
            return []
        beyond_lookback = self.day - timedelta(days=LOOKBACK_DAYS + 1)
        yesterday = self.day - timedelta(days=1)
        return [self.random_day(self.first, beyond_lookback)] + [
            self.random_day(self.late_day_start(), yesterday) for _ in range(count - 1)
        ]

    def moment(self, day: date) -> datetime:
        """A time on `day`, busier in the evening (the seed's hour profile)."""
        hour = self.rng.choices(range(24), cum_weights=_HOUR_WEIGHTS)[0]
        return _day_start(day) + timedelta(hours=hour, seconds=self.rng.randrange(3600))

    # --- listings --------------------------------------------------------------------------

    def release_listings(self) -> None:
        """Insert the pending listings due tonight: planned ones appear, removed ones return
        (with tonight as their last modification)."""
        apartments, attributes = PENDING_TABLES
        due = "appears_on <= %s"
        self.cursor.execute(
            f"SELECT id, kind FROM {apartments} WHERE {due} ORDER BY id", (self.day,)
        )
        for listing_id, kind in self.cursor.fetchall():
            self.released.add(listing_id)
            self.changes.append(Change(kind, listing_id, new=self.day))
        columns = ", ".join(APARTMENT_COLUMNS[:-1])
        self.cursor.execute(
            f"INSERT INTO apartments ({columns}, last_modified_timestamp)"
            f" SELECT {columns}, %s FROM {apartments} WHERE {due}",
            (self.moment(self.day), self.day),
        )
        columns = ", ".join(ATTRIBUTE_COLUMNS)
        self.cursor.execute(
            f"INSERT INTO apartment_attributes ({columns})"
            f" SELECT {', '.join(f't.{c}' for c in ATTRIBUTE_COLUMNS)} FROM {attributes} t"
            f" JOIN {apartments} p ON p.id = t.id WHERE p.{due}",
            (self.day,),
        )
        self.cursor.execute(
            f"DELETE p, t FROM {apartments} p LEFT JOIN {attributes} t ON t.id = p.id"
            f" WHERE p.{due}",
            (self.day,),
        )

    def change_listings(self, listings: list[_Listing]) -> _Listing:
        """Plan a late listing, remove one, and change listing_changes listings of each
        attribute (each listing at most one change, none to a listing released tonight, whose
        return must show it as it was); keep the rest, as they are now, in self.listings.
        Returns the planned listing, for the early bookings."""
        shuffled = self.rng.sample(listings, len(listings))
        released = [item for item in shuffled if item.id in self.released]
        shuffled = [item for item in shuffled if item.id not in self.released]

        def take(count: int, *, with_attributes: bool = False) -> list[_Listing]:
            taken = [item for item in shuffled if item.has_attributes or not with_attributes]
            for item in taken[:count]:
                shuffled.remove(item)
            return taken[:count]

        templates = take(1, with_attributes=True) or take(1)
        if not templates:
            raise ValueError("the source has no listing the curated rules keep")
        late = self.plan_listing(templates[0])
        for item in take(1):
            self.remove_listing(item)
        count = self.scale.listing_changes
        changed = [
            self.change_listing(kind, item)
            for kind in ("listing_price", "listing_active", "listing_title")
            for item in take(count)
        ]
        relocated = take(count, with_attributes=True)
        _upsert(
            self.cursor,
            "apartment_attributes",
            ("id", "cityname", "state", "latitude", "longitude"),
            [self.change_city(item) for item in relocated],
        )
        changed += relocated
        _upsert(
            self.cursor,
            "apartments",
            ("id", "price", "is_active", "title", "last_modified_timestamp"),
            [(i.id, i.price, i.is_active, i.title, self.moment(self.day)) for i in changed],
        )
        self.listings = {item.id: item for item in [*templates, *released, *shuffled, *changed]}
        return late

    def change_listing(self, kind: str, item: _Listing) -> _Listing:
        """The listing with its price moved, its is_active flipped, or its title edited."""
        if kind == "listing_price":
            new = item._replace(price=self.new_price(item.price))
            self.changes.append(Change(kind, item.id, old=item.price, new=new.price))
        elif kind == "listing_active":
            new = item._replace(is_active=0 if item.is_active == 1 else 1)
            self.changes.append(Change(kind, item.id, old=item.is_active, new=new.is_active))
        else:
            new = item._replace(title=self.new_title(item.title))
            self.changes.append(Change(kind, item.id, old=item.title, new=new.title))
        return new

    def new_price(self, price: Decimal) -> Decimal:
        """Up or down by 3-15%, on a multiple of 5, never the old price, never below 5."""
        change = self.rng.choice((-1, 1)) * self.rng.uniform(0.03, 0.15)
        new = Decimal(max(5, round(float(price) * (1 + change) / 5) * 5))
        return new if new != price else new + 5

    def new_title(self, title: str | None) -> str:
        """The title with a tag after ' - ', not the one it has: titles never grow."""
        base, _, tag = (title or "Apartment").partition(" - ")
        return f"{base} - {self.rng.choice([t for t in TITLE_TAGS if t != tag])}"

    def change_city(self, item: _Listing) -> tuple[Any, ...]:
        """The attributes (id, cityname, state, latitude, longitude) of a move to another city
        (another (state, cityname) pair: the same name in another state counts)."""
        city = self.rng.choice(
            [c for c in generate.CITIES if (c.state, c.name) != (item.state, item.cityname)]
        )
        self.changes.append(
            Change(
                "listing_city",
                item.id,
                old=(item.state, item.cityname),
                new=(city.state, city.name),
            )
        )
        latitude = f"{city.latitude + self.rng.gauss(0, 0.04):.7f}"
        longitude = f"{city.longitude + self.rng.gauss(0, 0.05):.7f}"
        return (item.id, city.name, city.state, latitude, longitude)

    def plan_listing(self, template: _Listing) -> _Listing:
        """A new listing, a copy of `template` under a fresh id, held back until
        LATE_LISTING_NIGHTS later while tonight's early bookings already reference it."""
        listing_id = LATE_LISTING_ID_BASE + self.day.toordinal()
        appears_on = self.day + timedelta(days=LATE_LISTING_NIGHTS)
        created = self.moment(self.day - timedelta(days=self.rng.randint(1, 30)))
        title = self.new_title(template.title)
        apartments, attributes = PENDING_TABLES
        self.cursor.execute(
            f"INSERT INTO {apartments} ({', '.join(APARTMENT_COLUMNS)}, appears_on, kind)"
            " SELECT %s, %s, source, price, currency, %s, 1, %s, %s, 'listing_appeared'"
            " FROM apartments WHERE id = %s",
            (listing_id, title, created, created, appears_on, template.id),
        )
        self.cursor.execute(
            f"INSERT INTO {attributes} ({', '.join(ATTRIBUTE_COLUMNS)})"
            f" SELECT %s, {', '.join(ATTRIBUTE_COLUMNS[1:])} FROM apartment_attributes"
            " WHERE id = %s",
            (listing_id, template.id),
        )
        self.changes.append(Change("listing_planned", listing_id, new=appears_on))
        return template._replace(id=listing_id, title=title, is_active=1)

    def remove_listing(self, item: _Listing) -> None:
        """Delete a listing from the source, kept aside to return RETURN_NIGHTS later."""
        returns_on = self.day + timedelta(days=RETURN_NIGHTS)
        apartments, attributes = PENDING_TABLES
        columns = ", ".join(APARTMENT_COLUMNS)
        self.cursor.execute(
            f"INSERT INTO {apartments} ({columns}, appears_on, kind)"
            f" SELECT {columns}, %s, 'listing_returned' FROM apartments WHERE id = %s",
            (returns_on, item.id),
        )
        columns = ", ".join(ATTRIBUTE_COLUMNS)
        self.cursor.execute(
            f"INSERT INTO {attributes} ({columns})"
            f" SELECT {columns} FROM apartment_attributes WHERE id = %s",
            (item.id,),
        )
        self.cursor.execute("DELETE FROM apartments WHERE id = %s", (item.id,))
        self.cursor.execute("DELETE FROM apartment_attributes WHERE id = %s", (item.id,))
        self.changes.append(Change("listing_removed", item.id, new=returns_on))

    # --- changes to existing bookings ------------------------------------------------------

    def change_bookings(
        self,
        sample: list[_Booking],
        undated: list[_Booking],
        old: list[_Booking],
        old_window: tuple[date, date] | None,
    ) -> None:
        """Status changes, moves, dates unset and set, deletions; then one upsert of the new
        versions and one DELETE."""
        scale, first, day = self.scale, self.first, self.day
        one_day = timedelta(days=1)
        pending = self.pick(sample, scale.confirmations, "pending")
        self.set_status("booking_confirmed", pending, "confirmed")
        self.set_status(
            "booking_cancelled", self.pick(sample, scale.cancellations, "confirmed"), "cancelled"
        )
        later_than_first = [row for row in sample if row.day > first]
        for row in self.pick(later_than_first, scale.moves):
            earliest = self.late_day_start()
            if earliest >= row.day:
                earliest = first
            self.move("booking_moved_earlier", row, self.random_day(earliest, row.day - one_day))
        for row in self.pick(sample, scale.moves):
            self.move("booking_moved_later", row, self.random_day(row.day + one_day, day))
        for row in self.pick(sample, scale.undated):
            self.updates.append(row._replace(booking_date=None))
            self.changes.append(Change("booking_undated", row.booking_id, row.day, row.day, None))
        for row in undated:
            self.move("booking_dated", row, self.random_day(self.late_day_start(), day))
        self.delete("booking_deleted", self.pick(sample, scale.deletions))
        if old_window:
            count, (old_start, old_end) = scale.old_changes, old_window
            self.set_status("old_booking_confirmed", self.pick(old, count, "pending"), "confirmed")
            self.set_status(
                "old_booking_cancelled", self.pick(old, count, "confirmed"), "cancelled"
            )
            self.delete("old_booking_deleted", self.pick(old, count))
            for row in self.pick(old, count):
                self.move("booking_moved_into_horizon", row, self.random_day(first, day))
            for row in self.pick(sample, count):
                new_day = self.random_day(old_start, old_end - one_day)
                self.move("booking_moved_out_of_horizon", row, new_day)
        _upsert(self.cursor, "bookings", BOOKING_COLUMNS, self.updates)
        if self.deletions:
            marks = ", ".join(["%s"] * len(self.deletions))
            self.cursor.execute(
                f"DELETE FROM bookings WHERE booking_id IN ({marks})", self.deletions
            )

    def pick(self, rows: list[_Booking], count: int, status: str | None = None) -> list[_Booking]:
        """Up to `count` rows (of `status`, if given) not changed yet tonight, the first on a
        day beyond the lookback when there is one."""
        free = [
            row
            for row in rows
            if row.booking_id not in self.taken and (status is None or row.status == status)
        ]
        edge = self.day - timedelta(days=LOOKBACK_DAYS)
        beyond = next((row for row in free if row.day is not None and row.day < edge), None)
        if beyond is not None:
            free.remove(beyond)
            free.insert(0, beyond)
        picked = free[: max(count, 0)]
        self.taken.update(row.booking_id for row in picked)
        return picked

    def set_status(self, kind: str, rows: list[_Booking], status: str) -> None:
        """A new status, written as the application writes it (lower case, no spaces)."""
        for row in rows:
            self.updates.append(row._replace(booking_status=status))
            self.changes.append(Change(kind, row.booking_id, row.day, row.booking_status, status))

    def move(self, kind: str, row: _Booking, new_day: date) -> None:
        """booking_date moved to `new_day` (same time of day); the stay moves too where it would
        otherwise start before the new booking day, so a clean booking stays clean."""
        if row.booking_date is None:
            booked = self.moment(new_day)
        else:
            booked = datetime.combine(new_day, row.booking_date.time())
        checkin, checkout = row.checkin_date, row.checkout_date
        if checkin is not None and checkin < new_day:
            shift = new_day - checkin
            checkin, checkout = new_day, None if checkout is None else checkout + shift
        self.updates.append(
            row._replace(booking_date=booked, checkin_date=checkin, checkout_date=checkout)
        )
        self.changes.append(Change(kind, row.booking_id, row.day, row.day, new_day))

    def delete(self, kind: str, rows: list[_Booking]) -> None:
        self.deletions.extend(row.booking_id for row in rows)
        self.changes.extend(Change(kind, row.booking_id, row.day) for row in rows)

    # --- views deleted ---------------------------------------------------------------------

    def delete_views(self, picked: dict[str, list[tuple[View, int]]]) -> None:
        """Delete one copy of each picked view. Views have no key: delete every copy, in one
        statement, then insert back all copies but one."""
        copies: dict[View, int] = {}
        for kind, views in picked.items():
            for view, count in views:
                if view not in copies:
                    copies[view] = count
                    self.changes.append(Change(kind, view, view[2].date()))
        if not copies:
            return
        match = (
            "(user_id <=> %s AND apartment_id <=> %s AND viewed_at = %s"
            " AND is_wishlisted <=> %s AND call_to_action <=> %s)"
        )
        times = sorted({view[2] for view in copies})
        deleted = self.cursor.execute(
            f"DELETE FROM user_viewing WHERE viewed_at IN ({', '.join(['%s'] * len(times))})"
            f" AND ({' OR '.join([match] * len(copies))})",
            [*times, *(value for view in copies for value in view)],
        )
        if deleted != sum(copies.values()):
            raise RuntimeError(f"deleted {deleted} views, expected {sum(copies.values())}")
        kept = [view for view, count in copies.items() for _ in range(count - 1)]
        if kept:
            self.cursor.executemany(insert_sql("user_viewing", VIEW_COLUMNS), kept)

    # --- new rows --------------------------------------------------------------------------

    def user(self) -> int:
        """A recent customer most of the time, else anyone in the same id range."""
        if self.rng.random() < 0.6:
            return self.rng.choice(self.users)
        return self.rng.randint(1, self.users[-1])

    def listing(self, candidates: list[_Listing]) -> _Listing:
        """A listing as popular as its recent bookings make it, sometimes any candidate."""
        if self.popular and self.rng.random() < 0.8:
            return self.listings[self.rng.choice(self.popular)]
        return self.rng.choice(candidates)

    def new_bookings(
        self, next_id: int, active: list[_Listing], late_listing: _Listing
    ) -> list[_Booking]:
        """The day's bookings, ids in time order from next_id: clean but for dirty_bookings
        with NEW_BOOKING_DIRT in turn and early_bookings of the planned listing."""
        scale = self.scale
        times = sorted(self.moment(self.day) for _ in range(scale.bookings))
        rows = [
            self.new_booking(next_id + i, at, self.listing(active)) for i, at in enumerate(times)
        ]
        special = self.rng.sample(range(len(rows)), scale.early_bookings + scale.dirty_bookings)
        for index in special[: scale.early_bookings]:
            row = rows[index]
            rows[index] = self.new_booking(row.booking_id, row.booking_date, late_listing)
            self.changes.append(
                Change("early_booking", row.booking_id, self.day, new=late_listing.id)
            )
        for turn, index in enumerate(special[scale.early_bookings :]):
            kind = NEW_BOOKING_DIRT[(self.day.toordinal() + turn) % len(NEW_BOOKING_DIRT)]
            rows[index] = self.dirty_booking(rows[index], kind)
            self.changes.append(
                Change("new_booking_dirt", rows[index].booking_id, self.day, new=kind)
            )
        self.cursor.executemany(insert_sql("bookings", BOOKING_COLUMNS), rows)
        return rows

    def new_booking(self, booking_id: int, booked: datetime, listing: _Listing) -> _Booking:
        """A clean booking: stay of 1-14 nights (often 7) starting 0-60 days after booking."""
        lead = int(61 * self.rng.random() ** 2)
        nights = 7 if self.rng.random() < 0.08 else 1 + int(14 * self.rng.random() ** 2)
        checkin = booked.date() + timedelta(days=lead)
        total = Decimal(f"{listing.nightly * nights * self.rng.uniform(0.95, 1.05):.2f}")
        status = self.rng.choices(_NEW_STATUSES, cum_weights=_NEW_STATUS_WEIGHTS)[0]
        checkout = checkin + timedelta(days=nights)
        return _Booking(
            booking_id, self.user(), listing.id, booked, checkin, checkout, total,
            listing.currency, status,
        )  # fmt: skip

    def dirty_booking(self, row: _Booking, kind: str) -> _Booking:
        """The booking with one kind of NEW_BOOKING_DIRT (noise kinds stay valid)."""
        if kind == "checkin_before_booking":
            checkin = row.day - timedelta(days=self.rng.randint(1, 3))
            stay = row.checkout_date - row.checkin_date
            return row._replace(checkin_date=checkin, checkout_date=checkin + stay)
        if kind == "currency_invalid":
            return row._replace(currency=self.rng.choice(fill.BOOKING_INVALID_CURRENCIES))
        if kind == "status_noise":
            return row._replace(booking_status=f" {row.booking_status.capitalize()} ")
        if kind == "currency_noise":
            return row._replace(currency=f"{row.currency.lower()} ")
        if kind == "user_null":
            return row._replace(user_id=None)
        return row._replace(apartment_id=ORPHAN_ID_BASE + self.rng.randrange(1000))

    def new_views(self, bookings: list[_Booking]) -> int:
        """The day's views: views leading to the new bookings, browsing, duplicate_views exact
        copies, dirty_views with NEW_VIEW_DIRT in turn. Returns how many."""
        unique = self.scale.views - self.scale.duplicate_views
        rows: list[View] = []
        for booking in bookings:
            if booking.user_id is None or booking.apartment_id is None:
                continue
            since_midnight = int((booking.booking_date - _day_start(self.day)).total_seconds())
            for _ in range(self.rng.randrange(3)):
                seen = booking.booking_date - timedelta(
                    seconds=self.rng.randrange(min(6 * 3600, since_midnight) + 1)
                )
                rows.append(self.view(booking.user_id, booking.apartment_id, seen, funnel=True))
        rows = rows[:unique]
        candidates = list(self.listings.values())
        while len(rows) < unique:
            rows.append(self.browsing_view(self.day, candidates))
        chosen = self.rng.sample(range(unique), self.scale.duplicate_views + self.scale.dirty_views)
        for index in chosen[: self.scale.duplicate_views]:
            rows.append(rows[index])
            self.changes.append(Change("new_view_dirt", rows[index], self.day, new="duplicate"))
        for turn, index in enumerate(chosen[self.scale.duplicate_views :]):
            kind = NEW_VIEW_DIRT[(self.day.toordinal() + turn) % len(NEW_VIEW_DIRT)]
            rows[index] = _dirty_view(rows[index], kind)
            self.changes.append(Change("new_view_dirt", rows[index], self.day, new=kind))
        self.cursor.executemany(insert_sql("user_viewing", VIEW_COLUMNS), rows)
        return len(rows)

    def view(self, user_id: int, apartment_id: int, seen: datetime, *, funnel: bool) -> View:
        """A view; views leading to a booking are wishlisted and 'book_now' more often."""
        wishlisted = int(self.rng.random() < (0.25 if funnel else 0.06))
        actions = ("book_now", "contact_owner", "none")
        weights = (45, 75, 100) if funnel else (10, 25, 100)
        return (
            user_id,
            apartment_id,
            seen,
            wishlisted,
            self.rng.choices(actions, cum_weights=weights)[0],
        )

    def browsing_view(self, day: date, candidates: list[_Listing]) -> View:
        return self.view(self.user(), self.listing(candidates).id, self.moment(day), funnel=False)

    def late_views(self) -> None:
        """Views inserted tonight on earlier days within the horizon."""
        candidates = list(self.listings.values())
        rows = [self.browsing_view(d, candidates) for d in self.late_days(self.scale.late_views)]
        self.changes.extend(Change("view_late", row, row[2].date()) for row in rows)
        if rows:
            self.cursor.executemany(insert_sql("user_viewing", VIEW_COLUMNS), rows)


def _dirty_view(view: View, kind: str) -> View:
    """The view with one kind of NEW_VIEW_DIRT (a null wishlist flag is valid: read false)."""
    user_id, apartment_id, seen, wishlisted, action = view
    if kind == "user_null":
        return (None, apartment_id, seen, wishlisted, action)
    if kind == "apartment_null":
        return (user_id, None, seen, wishlisted, action)
    if kind == "viewed_at_null":
        return (user_id, apartment_id, None, wishlisted, action)
    return (user_id, apartment_id, seen, None, action)


def _upsert(cursor: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Update rows by their key (the first column) in one batched statement, INSERT ... ON
    DUPLICATE KEY UPDATE: every row was read from `table` in this transaction, so the insert
    part never applies."""
    if rows:
        updates = ", ".join(f"{column} = VALUES({column})" for column in columns[1:])
        cursor.executemany(
            f"{insert_sql(table, tuple(columns))} ON DUPLICATE KEY UPDATE {updates}", rows
        )


def _ensure_pending_tables(cursor: Any) -> None:
    """Create the application's tables of listings held back (see PENDING_TABLES) on the first
    night: the contract's columns, plus the night a listing is due and what it does then."""
    apartments, attributes = PENDING_TABLES
    cursor.execute("SHOW TABLES LIKE %s", (apartments,))
    if cursor.fetchone() is None:
        cursor.execute(f"CREATE TABLE {apartments} LIKE apartments")
        cursor.execute(
            f"ALTER TABLE {apartments} ADD COLUMN appears_on DATE NOT NULL,"
            " ADD COLUMN kind VARCHAR(32) NOT NULL"
        )
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {attributes} LIKE apartment_attributes")
