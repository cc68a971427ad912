"""The changing source (rental_platform.seed.changes) against a real MariaDB: every night has
every kind of change, each does to the source rows what its log says, new rows keep to the
contract and mostly to the curated rules, and the same seed plays the same nights.

Each night is checked on snapshots of the four tables taken just before and just after it.
Needs a MariaDB 10.6+ server (RENTAL_TEST_MYSQL_SERVER); two throwaway databases are created and
dropped.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import pymysql
import pytest

from rental_platform.seed import SCALES, seed_source
from rental_platform.seed.changes import (
    BEYOND_HORIZON_KINDS,
    KINDS,
    LATE_LISTING_NIGHTS,
    LATER_NIGHT_KINDS,
    LOOKBACK_DAYS,
    NIGHT_SCALES,
    PENDING_TABLES,
    RETURN_NIGHTS,
    NightLog,
    NightScale,
    play_night,
)
from rental_platform.seed.load import APARTMENT_COLUMNS, ATTRIBUTE_COLUMNS, BOOKING_COLUMNS
from rental_platform.settings import parse_mysql_url
from rental_platform_tests.harness import SERVER_URL

SEED_SCALE = SCALES["tiny"]
NIGHT = NIGHT_SCALES["small"]
SEED = 42
NIGHTS = 6  # listings planned or removed on the first nights appear or return within them
FIRST_DAY = SEED_SCALE.end  # the first day after the seeded range
HORIZON = 10  # short, so that the tiny range has days older than the horizon
ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Snapshot:
    """The four source tables: bookings, listings and attributes by key, views as a multiset."""

    bookings: dict[int, dict[str, Any]]
    views: Counter[tuple]
    apartments: dict[int, dict[str, Any]]
    attributes: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Night:
    day: date
    beyond_horizon: bool
    log: NightLog
    before: Snapshot
    after: Snapshot

    @property
    def first(self) -> date:
        """The first day within the horizon."""
        return self.day - timedelta(days=HORIZON - 1)

    @property
    def old_before(self) -> date:
        """Days older than the horizon are before this one."""
        return self.day - timedelta(days=HORIZON)


def snapshot(cursor: Any) -> Snapshot:
    def keyed(table: str, columns: tuple[str, ...]) -> dict[int, dict[str, Any]]:
        cursor.execute(f"SELECT {', '.join(columns)} FROM {table}")
        return {row[0]: dict(zip(columns, row, strict=True)) for row in cursor.fetchall()}

    cursor.execute("SELECT * FROM user_viewing")
    views = Counter(cursor.fetchall())
    return Snapshot(
        keyed("bookings", BOOKING_COLUMNS),
        views,
        keyed("apartments", APARTMENT_COLUMNS),
        keyed("apartment_attributes", ATTRIBUTE_COLUMNS),
    )


def play(kwargs: dict[str, Any]) -> list[Night]:
    """Seed the tiny scale, play NIGHTS nights (every other one beyond the horizon), and
    snapshot the source around each."""
    seed_source(kwargs, SEED_SCALE, seed=SEED)
    nights = []
    with pymysql.connect(**kwargs) as connection, connection.cursor() as cursor:
        for index in range(NIGHTS):
            day, beyond = FIRST_DAY + timedelta(days=index), index % 2 == 1
            before = snapshot(cursor)
            log = play_night(
                connection, day, seed=SEED, horizon_days=HORIZON, beyond_horizon=beyond
            )
            nights.append(Night(day, beyond, log, before, snapshot(cursor)))
    return nights


@contextmanager
def database(suffix: str) -> Iterator[dict[str, Any]]:
    """Connection arguments of a throwaway database of this module's own."""
    name = f"rental_test_changes_{os.getpid()}_{suffix}"
    kwargs = parse_mysql_url(f"{SERVER_URL}/{name}").pymysql_kwargs()
    server = {key: value for key, value in kwargs.items() if key != "database"}
    try:
        yield kwargs
    finally:
        with pymysql.connect(**server) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="module")
def source() -> Iterator[dict[str, Any]]:
    with database("a") as kwargs:
        yield kwargs


@pytest.fixture(scope="module")
def nights(source: dict[str, Any]) -> list[Night]:
    return play(source)


def nights_of(nights: list[Night], kind: str) -> Iterator[tuple[Night, Any]]:
    """(night, change) for every change of `kind`."""
    for night in nights:
        for change in night.log.of(kind):
            yield night, change


def day_of(row: dict[str, Any] | None) -> date | None:
    return None if row is None or row["booking_date"] is None else row["booking_date"].date()


def status(row: dict[str, Any]) -> str:
    return (row["booking_status"] or "").strip(" ").lower()


# --- every kind, every night ----------------------------------------------------------------


def test_every_kind_of_change_every_night(nights: list[Night]) -> None:
    for index, night in enumerate(nights):
        expected = set(KINDS)
        if not night.beyond_horizon:
            expected -= BEYOND_HORIZON_KINDS
        if index < LATE_LISTING_NIGHTS:
            expected.discard("listing_appeared")
        if index < RETURN_NIGHTS:
            expected.discard("listing_returned")
        assert set(night.log.counts()) == expected, night.log.summary()
    assert set(nights[-1].log.counts()) >= LATER_NIGHT_KINDS


def test_counts_follow_the_night_scale(nights: list[Night]) -> None:
    planned = {
        "booking_confirmed": NIGHT.confirmations,
        "booking_cancelled": NIGHT.cancellations,
        "booking_moved_earlier": NIGHT.moves,
        "booking_moved_later": NIGHT.moves,
        "booking_undated": NIGHT.undated,
        "booking_dated": NIGHT.undated,
        "booking_deleted": NIGHT.deletions,
        "view_late": NIGHT.late_views,
        "view_deleted": NIGHT.deleted_views,
        "view_duplicate_deleted": 1,
        "listing_price": NIGHT.listing_changes,
        "listing_city": NIGHT.listing_changes,
        "early_booking": NIGHT.early_bookings,
        "new_booking_dirt": NIGHT.dirty_bookings,
        "new_view_dirt": NIGHT.dirty_views + NIGHT.duplicate_views,
        "old_booking_deleted": NIGHT.old_changes,
    }
    for night in nights:
        counts = night.log.counts()
        for kind, count in planned.items():
            if kind in counts or kind not in BEYOND_HORIZON_KINDS:
                assert counts[kind] == count, (kind, night.log.summary())


# --- new rows on the day --------------------------------------------------------------------

THREE_LETTERS = re.compile(r"[A-Z]{3}")


def breaks_a_rule(row: dict[str, Any], listings: set[int]) -> bool:
    """Whether the curated rules of kpis.md quarantine the booking (listings: those curated)."""
    checkin, checkout, booked = row["checkin_date"], row["checkout_date"], day_of(row)
    currency = (row["currency"] or "").strip(" ").upper()
    return (
        None in (row["user_id"], row["apartment_id"], booked, checkin, checkout)
        or checkout <= checkin
        or checkin < booked
        or row["total_price"] is None
        or row["total_price"] < 0
        or not THREE_LETTERS.fullmatch(currency)
        or status(row) not in ("confirmed", "cancelled", "pending")
        or row["apartment_id"] not in listings
    )


def curated_listings(snap: Snapshot) -> set[int]:
    return {
        key
        for key, row in snap.apartments.items()
        if row["price"] is not None
        and row["price"] > 0
        and THREE_LETTERS.fullmatch((row["currency"] or "").strip(" ").upper())
        and row["listing_created_on"] is not None
    }


def test_new_bookings_fall_on_the_day_with_fresh_ids(nights: list[Night]) -> None:
    for night in nights:
        new = night.log.new_bookings
        assert len(new) == NIGHT.bookings
        assert new.start == max(night.before.bookings) + 1
        assert all(night.after.bookings[key]["booking_date"].date() == night.day for key in new)


def test_new_bookings_are_mostly_clean(nights: list[Night]) -> None:
    """Under the platform's default quarantine limit (5%), counting the early bookings of a
    listing that does not exist yet; check-in on or after the booking day, except that dirt."""
    for night in nights:
        listings = curated_listings(night.after)
        rows = [night.after.bookings[key] for key in night.log.new_bookings]
        broken = [row for row in rows if breaks_a_rule(row, listings)]
        assert len(broken) < 0.05 * len(rows), night.log.summary()
        early = {
            c.key for c in night.log.of("new_booking_dirt") if c.new == "checkin_before_booking"
        }
        assert {row["booking_id"] for row in rows if row["checkin_date"] < day_of(row)} == early


def test_new_views_fall_on_the_day(nights: list[Night]) -> None:
    for night in nights:
        added = night.after.views - night.before.views
        on_the_day = sum(n for view, n in added.items() if view[2] and view[2].date() == night.day)
        undated = sum(n for view, n in added.items() if view[2] is None)
        assert on_the_day + undated == night.log.new_views == NIGHT.views
        duplicates = [c.key for c in night.log.of("new_view_dirt") if c.new == "duplicate"]
        assert all(night.after.views[view] >= 2 for view in duplicates)


def test_new_dirt_is_what_the_log_says(nights: list[Night]) -> None:
    for night, change in nights_of(nights, "new_booking_dirt"):
        row = night.after.bookings[change.key]
        currency = (row["currency"] or "").strip(" ").upper()
        holds = {
            "checkin_before_booking": 1 <= (day_of(row) - row["checkin_date"]).days <= 3,
            "currency_invalid": not THREE_LETTERS.fullmatch(currency),
            "status_noise": row["booking_status"] != status(row),
            "currency_noise": row["currency"] != currency and THREE_LETTERS.fullmatch(currency),
            "user_null": row["user_id"] is None,
            "orphan": row["apartment_id"] not in night.after.apartments,
        }
        assert holds[change.new], (change, row)


# --- late changes to bookings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [
        ("booking_confirmed", "pending", "confirmed"),
        ("booking_cancelled", "confirmed", "cancelled"),
        ("old_booking_confirmed", "pending", "confirmed"),
        ("old_booking_cancelled", "confirmed", "cancelled"),
    ],
)
def test_late_status_changes(nights: list[Night], kind: str, old: str, new: str) -> None:
    for night, change in nights_of(nights, kind):
        before, after = night.before.bookings[change.key], night.after.bookings[change.key]
        assert (status(before), after["booking_status"]) == (old, new)
        assert {k: v for k, v in before.items() if k != "booking_status"} == {
            k: v for k, v in after.items() if k != "booking_status"
        }
        assert change.day == day_of(before)
        if kind.startswith("old_"):
            assert change.day < night.old_before
        else:
            assert night.first <= change.day < night.day


def test_late_changes_reach_beyond_the_lookback(nights: list[Night]) -> None:
    """Each night, each kind of late change touches a day more than LOOKBACK_DAYS ago."""
    kinds = ("booking_confirmed", "booking_cancelled", "booking_moved_earlier", "booking_deleted")
    for night in nights:
        edge = night.day - timedelta(days=LOOKBACK_DAYS)
        for kind in (*kinds, "view_late", "view_deleted"):
            assert min(c.day for c in night.log.of(kind)) < edge, kind


@pytest.mark.parametrize(
    "kind",
    [
        "booking_moved_earlier",
        "booking_moved_later",
        "booking_dated",
        "booking_moved_into_horizon",
        "booking_moved_out_of_horizon",
    ],
)
def test_moved_bookings(nights: list[Night], kind: str) -> None:
    for night, change in nights_of(nights, kind):
        before, after = night.before.bookings[change.key], night.after.bookings[change.key]
        assert (day_of(before), day_of(after)) == (change.old, change.new)
        assert change.old != change.new
        if before["booking_date"] is not None:
            assert after["booking_date"].time() == before["booking_date"].time()
        checkin = before["checkin_date"]
        if checkin is not None and (change.old is None or checkin >= change.old):
            assert after["checkin_date"] >= change.new  # a clean stay stays clean
        within = night.first <= change.new <= night.day
        if kind == "booking_moved_earlier":
            assert night.first <= change.new < change.old
        elif kind == "booking_moved_later":
            assert change.old < change.new <= night.day
        elif kind == "booking_dated":
            assert change.old is None and within
        elif kind == "booking_moved_into_horizon":
            assert change.old < night.old_before and within
        else:
            assert night.first <= change.old and change.new < night.old_before


def test_undated_bookings(nights: list[Night]) -> None:
    for night, change in nights_of(nights, "booking_undated"):
        assert day_of(night.before.bookings[change.key]) == change.old
        assert night.after.bookings[change.key]["booking_date"] is None


@pytest.mark.parametrize("kind", ["booking_deleted", "old_booking_deleted"])
def test_deleted_bookings(nights: list[Night], kind: str) -> None:
    for night, change in nights_of(nights, kind):
        assert change.key in night.before.bookings
        assert change.key not in night.after.bookings
        old = kind.startswith("old_")
        assert (change.day < night.old_before) if old else (night.first <= change.day)


def test_without_beyond_horizon_no_older_day_changes(nights: list[Night]) -> None:
    """Every booking changed on such a night had, and has, its day within the horizon."""
    for night in nights:
        if night.beyond_horizon:
            continue
        changed = [
            key
            for key in night.before.bookings.keys() | night.after.bookings.keys()
            if night.before.bookings.get(key) != night.after.bookings.get(key)
        ]
        days = {day_of(night.before.bookings.get(k)) for k in changed}
        days |= {day_of(night.after.bookings.get(k)) for k in changed}
        assert all(d is None or night.first <= d <= night.day for d in days)


# --- views ----------------------------------------------------------------------------------


def test_late_views(nights: list[Night]) -> None:
    for night in nights:
        late = Counter(change.key for change in night.log.of("view_late"))
        for view, count in late.items():
            assert night.after.views[view] - night.before.views[view] == count
            assert night.first <= view[2].date() < night.day


@pytest.mark.parametrize("kind", ["view_deleted", "view_duplicate_deleted", "old_view_deleted"])
def test_deleted_views_lose_one_copy(nights: list[Night], kind: str) -> None:
    for night, change in nights_of(nights, kind):
        assert night.after.views[change.key] == night.before.views[change.key] - 1
        if kind == "view_duplicate_deleted":
            assert night.before.views[change.key] >= 2
        if kind == "old_view_deleted":
            assert change.day < night.old_before
        else:
            assert night.first <= change.day < night.day


# --- listings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "column"),
    [("listing_price", "price"), ("listing_active", "is_active"), ("listing_title", "title")],
)
def test_listing_changes(nights: list[Night], kind: str, column: str) -> None:
    for night, change in nights_of(nights, kind):
        before, after = night.before.apartments[change.key], night.after.apartments[change.key]
        assert (before[column], after[column]) == (change.old, change.new)
        assert change.old != change.new
        assert after["last_modified_timestamp"].date() == night.day


def test_listing_city_changes(nights: list[Night]) -> None:
    for night, change in nights_of(nights, "listing_city"):
        before = night.before.attributes[change.key]
        after = night.after.attributes[change.key]
        assert (before["state"], before["cityname"]) == change.old
        assert (after["state"], after["cityname"]) == change.new != change.old


def test_listing_referenced_before_it_exists(nights: list[Night]) -> None:
    """Bookings of a planned listing come first; the listing exists from its night on."""
    planned = list(nights_of(nights, "listing_planned"))
    assert len(planned) == NIGHTS
    for index, (night, change) in enumerate(planned):
        early = [c.key for c in night.log.of("early_booking")]
        assert {night.after.bookings[key]["apartment_id"] for key in early} == {change.key}
        assert change.new == night.day + timedelta(days=LATE_LISTING_NIGHTS)
        for later in nights[index:]:
            assert (change.key in later.after.apartments) == (later.day >= change.new)
            assert (change.key in later.after.attributes) == (later.day >= change.new)
    appeared = {(night.day, change.key) for night, change in nights_of(nights, "listing_appeared")}
    assert appeared == {(c.new, c.key) for _, c in planned if c.new <= nights[-1].day}


def test_removed_listing_comes_back(nights: list[Night]) -> None:
    removed = list(nights_of(nights, "listing_removed"))
    assert len(removed) == NIGHTS
    for index, (night, change) in enumerate(removed):
        assert change.key in night.before.apartments
        assert change.new == night.day + timedelta(days=RETURN_NIGHTS)
        for later in nights[index:]:
            assert (change.key in later.after.apartments) == (later.day >= change.new)
            if later.day == change.new:
                back = later.after.apartments[change.key]
                gone = night.before.apartments[change.key]
                assert {**back, "last_modified_timestamp": None} == {
                    **gone,
                    "last_modified_timestamp": None,
                }
                assert later.after.attributes.get(change.key) == (
                    night.before.attributes.get(change.key)
                )
                assert ("listing_returned", change.key) in {
                    (c.kind, c.key) for c in later.log.changes
                }


def test_pending_tables_hold_only_what_is_due_later(
    nights: list[Night], source: dict[str, Any]
) -> None:
    apartments, _attributes = PENDING_TABLES
    with pymysql.connect(**source) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT id, appears_on, kind FROM {apartments} ORDER BY id")
        pending = cursor.fetchall()
    last = nights[-1].day
    assert pending and all(appears_on > last for _, appears_on, _ in pending)
    assert not {key for key, _, _ in pending} & nights[-1].after.apartments.keys()


# --- determinism and input checks -----------------------------------------------------------


def test_same_seed_same_rows(nights: list[Night]) -> None:
    with database("b") as kwargs:
        again = play(kwargs)
    for first, second in zip(nights, again, strict=True):
        assert first.after == second.after, first.day
        assert first.log == second.log, first.day


def test_night_scale_and_horizon_are_checked(source: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="dirty_bookings"):
        NightScale(**{**vars(NIGHT), "bookings": 1})
    with pytest.raises(ValueError, match="negative"):
        NightScale(**{**vars(NIGHT), "moves": -1})
    with pymysql.connect(**source) as connection, pytest.raises(ValueError, match="horizon"):
        play_night(connection, FIRST_DAY, seed=SEED, horizon_days=2)


def test_late_changes_mostly_fall_on_the_recent_days() -> None:
    """With recent_days, about one late booking change in RECENT_EXCEPTIONS falls before the
    recent days (and the first of each kind may): not most of the cancellations, moves and
    deletions, as when the sample's few rows of any day were picked first."""
    scale = replace(NIGHT, confirmations=5, cancellations=30, moves=8, deletions=8, recent_days=6)
    day, horizon = FIRST_DAY, 20
    recent_first = day - timedelta(days=scale.recent_days)
    with database("recent") as kwargs:
        seed_source(kwargs, SEED_SCALE, seed=SEED)
        with pymysql.connect(**kwargs) as connection:
            log = play_night(connection, day, seed=SEED, horizon_days=horizon, scale=scale)
    kinds = [kind for kind in KINDS if kind.startswith("booking_")]
    late = [change for kind in kinds for change in log.of(kind) if change.day is not None]
    older = [change for change in late if change.day < recent_first]
    assert len(late) >= 55, log.summary()
    assert len(older) <= len(late) // 10, [(c.kind, c.day) for c in older]
