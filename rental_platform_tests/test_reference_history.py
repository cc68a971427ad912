"""The reference's listing history (benchmarks/reference.py, kpis.md "Listing history") on small
hand-made sources, each case with the exact rows it must give: how snapshots start and close
versions, how bookings are judged against the version of their day, and how a KPI period sees
every listing as it was on its last day. The curated rules the snapshot and the run share, and
the decimal rounding of avg_listing_price, are checked here too."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pymysql
import pytest

from benchmarks.reference import run_reference, snapshot_listings
from rental_platform import tables
from rental_platform.seed.load import schema_statements
from rental_platform.settings import MySqlSource, parse_mysql_url
from rental_platform_tests.harness import SERVER_URL

BEGINNING = date(1, 1, 1)
NOTHING = {"new": 0, "changed": 0, "closed": 0, "returned": 0}
# The columns most cases look at; the first case states every column.
VERSION = "id, title, price, is_active, cityname, valid_from, valid_to"
_names = itertools.count()


@dataclass(frozen=True)
class Listing:
    """One source listing: an apartments row and, unless `attributes` is False, an
    apartment_attributes row with its city."""

    id: int
    title: str | None = "Flat"
    price: str | None = "100.00"
    currency: str | None = "USD"
    created: str | None = "2025-01-01 09:00:00"
    active: int | None = 1
    cityname: str | None = "Austin"
    state: str | None = "TX"
    attributes: bool = True


def booking(
    booking_id: int,
    user_id: int | None,
    apartment_id: int | None,
    booked: str | None,
    checkin: str | None,
    checkout: str | None,
    total: str | None = "100.00",
    currency: str | None = "USD",
    status: str | None = "confirmed",
) -> tuple:
    """A source bookings row."""
    return (booking_id, user_id, apartment_id, booked, checkin, checkout, total, currency, status)


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


@dataclass
class Source:
    """A MariaDB database of its own with the contract's tables, and where the reference keeps
    its history and writes its runs."""

    mysql: MySqlSource
    connection: pymysql.connections.Connection
    folder: Path

    @property
    def history(self) -> Path:
        return self.folder / "listing_history.duckdb"

    def execute(self, sql: str, rows: list[tuple] | None = None) -> None:
        with self.connection.cursor() as cursor:
            if rows is None:
                cursor.execute(sql)
            else:
                cursor.executemany(sql, rows)
        self.connection.commit()

    def put(self, *listings: Listing) -> None:
        """Insert or replace the listings (a listing without attributes loses its row)."""
        self.execute(
            "REPLACE INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
            [
                (x.id, x.title, "web", x.price, x.currency, x.created, x.active, x.created)
                for x in listings
            ],
        )
        self.execute("DELETE FROM apartment_attributes WHERE id = %s", [(x.id,) for x in listings])
        attributes = [(x.id, x.cityname, x.state) for x in listings if x.attributes]
        if attributes:
            self.execute(
                "INSERT INTO apartment_attributes (id, cityname, state) VALUES (%s,%s,%s)",
                attributes,
            )

    def remove(self, *ids: int) -> None:
        for table in ("apartments", "apartment_attributes"):
            self.execute(f"DELETE FROM {table} WHERE id = %s", [(i,) for i in ids])

    def book(self, *bookings: tuple) -> None:
        self.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", list(bookings))

    def snapshot(self, stamp: str) -> dict[str, int]:
        return snapshot_listings(self.history, self.mysql, date.fromisoformat(stamp))

    def versions(self, columns: str = VERSION) -> list[tuple]:
        return query(
            self.history,
            f"SELECT {columns} FROM history.listings_history ORDER BY id, valid_from",
        )

    def run(self, start: str, end: str) -> Path:
        database = self.folder / "reference.duckdb"
        run_reference(
            self.mysql, date.fromisoformat(start), date.fromisoformat(end), database, self.history
        )
        return database


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Source]:
    name = f"rental_reference_history_{os.getpid()}_{next(_names)}"
    mysql = parse_mysql_url(f"{SERVER_URL}/{name}")
    server = {k: v for k, v in mysql.pymysql_kwargs().items() if k != "database"}
    with pymysql.connect(**server) as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}`")
    connection = pymysql.connect(**mysql.pymysql_kwargs())
    try:
        with connection.cursor() as cursor:
            for statement in schema_statements().values():
                cursor.execute(statement)
        yield Source(mysql, connection, tmp_path)
    finally:
        connection.close()
        with pymysql.connect(**server) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


# --- snapshots ---------------------------------------------------------------------------------


def test_first_snapshot_curates_every_listing_from_the_beginning(source: Source) -> None:
    source.execute(
        "INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
        [
            (1, "  Loft ", "web", "100.00", " usd", "2025-01-01 09:00", None, "2025-01-02 10:00"),
            (2, "L2", " app", "200.50", "EUR", "2025-01-03 00:00", 1, None),
            (3, "L3", "web", "300.00", "EURO", "2025-01-03 00:00", 1, None),
        ],
    )
    source.execute(
        "INSERT INTO apartment_attributes VALUES "
        "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        [
            (
                *(1, "housing/rent", " Nice ", "AC,Pool", "1.5", "2.0", "0.00", "Yes", "None"),
                *("$100", "Monthly", 700, " 1 Main St", " Austin", "TX ", "30.2672", "-97.7431"),
            )
        ],
    )
    assert source.snapshot("2025-02-28") == NOTHING | {"new": 2}
    columns = ", ".join(c.name for c in tables.LISTING_COLUMNS) + ", valid_from, valid_to"
    assert source.versions(columns) == [
        (
            *(1, "Loft", "web", Decimal("100.00"), "USD", datetime(2025, 1, 1, 9), False),
            *(datetime(2025, 1, 2, 10), "housing/rent", "Nice", "AC,Pool", Decimal("1.5")),
            *(Decimal("2.0"), Decimal("0.00"), "Yes", "None", "$100", "Monthly", 700),
            *("1 Main St", "Austin", "TX", Decimal("30.2672000"), Decimal("-97.7431000")),
            *(BEGINNING, None),
        ),
        (
            *(2, "L2", "app", Decimal("200.50"), "EUR", datetime(2025, 1, 3), True, None),
            *(None,) * 16,
            *(BEGINNING, None),
        ),
    ]
    assert query(source.history, "SELECT stamp FROM history.latest_stamp") == [(date(2025, 2, 28),)]
    described = query(source.history, "DESCRIBE history.listings_history")
    assert [row[0] for row in described] == tables.CURATED_LISTINGS_HISTORY.column_names


def test_a_price_change_closes_the_version_and_starts_one_on_the_stamp(source: Source) -> None:
    source.put(Listing(1), Listing(2))
    source.snapshot("2025-03-01")
    source.put(Listing(1, price="120.00"))
    assert source.snapshot("2025-03-10") == NOTHING | {"changed": 1}
    assert source.versions() == [
        (1, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, date(2025, 3, 10)),
        (1, "Flat", Decimal("120.00"), True, "Austin", date(2025, 3, 10), None),
        (2, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, None),
    ]


def test_a_snapshot_without_curated_change_keeps_the_versions(source: Source) -> None:
    """Noise that curation removes (spaces, casing, a null flag read as false) is no change;
    the version keeps the _extracted_at of the snapshot that started it."""
    source.put(Listing(1, active=0))
    source.snapshot("2025-03-01")
    before = source.versions("*")
    source.put(Listing(1, title="Flat  ", currency=" usd", active=None, cityname="Austin "))
    assert source.snapshot("2025-03-10") == NOTHING
    assert source.versions("*") == before
    assert source.versions() == [(1, "Flat", Decimal("100.00"), False, "Austin", BEGINNING, None)]


def test_a_stamp_not_later_than_the_latest_changes_nothing(source: Source) -> None:
    source.put(Listing(1))
    source.snapshot("2025-03-10")
    source.put(Listing(1, price="120.00"), Listing(2))
    assert source.snapshot("2025-03-10") == NOTHING
    assert source.snapshot("2025-03-09") == NOTHING
    assert source.versions() == [(1, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, None)]
    assert query(source.history, "SELECT stamp FROM history.latest_stamp") == [(date(2025, 3, 10),)]
    assert source.snapshot("2025-03-11") == NOTHING | {"changed": 1, "new": 1}
    assert source.versions() == [
        (1, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, date(2025, 3, 11)),
        (1, "Flat", Decimal("120.00"), True, "Austin", date(2025, 3, 11), None),
        (2, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, None),
    ]


def test_a_listing_gone_or_quarantined_is_closed_and_returns_after_a_gap(source: Source) -> None:
    source.put(Listing(1), Listing(2))
    source.snapshot("2025-03-01")
    source.remove(1)
    source.put(Listing(2, price=None))
    assert source.snapshot("2025-03-10") == NOTHING | {"closed": 2}
    source.put(Listing(1), Listing(2))
    assert source.snapshot("2025-03-20") == NOTHING | {"returned": 2}
    assert source.versions() == [
        (1, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, date(2025, 3, 10)),
        (1, "Flat", Decimal("100.00"), True, "Austin", date(2025, 3, 20), None),
        (2, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, date(2025, 3, 10)),
        (2, "Flat", Decimal("100.00"), True, "Austin", date(2025, 3, 20), None),
    ]


def test_a_listing_curated_late_starts_from_the_beginning(source: Source) -> None:
    """Fixed after being quarantined, or new in the source: it existed all along."""
    source.put(Listing(1, currency="U$D"), Listing(2))
    assert source.snapshot("2025-03-01") == NOTHING | {"new": 1}
    source.put(Listing(1), Listing(3, title="New"))
    assert source.snapshot("2025-03-10") == NOTHING | {"new": 2}
    assert source.versions() == [
        (1, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, None),
        (2, "Flat", Decimal("100.00"), True, "Austin", BEGINNING, None),
        (3, "New", Decimal("100.00"), True, "Austin", BEGINNING, None),
    ]


def test_a_change_in_any_curated_column_starts_a_version(source: Source) -> None:
    """An attribute (cityname), listing_created_on, and losing the attributes row."""
    source.put(Listing(1), Listing(2), Listing(3))
    source.snapshot("2025-03-01")
    source.put(
        Listing(1, cityname="Dallas"),
        Listing(2, created="2025-01-02 09:00:00"),
        Listing(3, attributes=False),
    )
    assert source.snapshot("2025-03-10") == NOTHING | {"changed": 3}
    march = date(2025, 3, 10)
    assert source.versions("id, cityname, listing_created_on, valid_from, valid_to") == [
        (1, "Austin", datetime(2025, 1, 1, 9), BEGINNING, march),
        (1, "Dallas", datetime(2025, 1, 1, 9), march, None),
        (2, "Austin", datetime(2025, 1, 1, 9), BEGINNING, march),
        (2, "Austin", datetime(2025, 1, 2, 9), march, None),
        (3, "Austin", datetime(2025, 1, 1, 9), BEGINNING, march),
        (3, None, datetime(2025, 1, 1, 9), march, None),
    ]


# --- curated rules -----------------------------------------------------------------------------


def test_listing_rules_in_order_and_three_letter_codes(source: Source) -> None:
    """A code is three ASCII letters after upper and trim; trim removes spaces only, and a
    trailing newline is not matched away."""
    currencies = [None, "", "  ", "EURO", "U$D", "US", "USD\n", "\tUSD", " usd ", "xyz"]
    source.put(*(Listing(i, currency=c) for i, c in enumerate(currencies, start=1)))
    source.put(
        Listing(11, price=None, currency="EURO"),
        Listing(12, price="0.00"),
        Listing(13, price="-1.00", created=None),
        Listing(14, created=None),
    )
    source.snapshot("2025-03-31")
    database = source.run("2025-03-01", "2025-03-31")
    assert query(database, "SELECT id, reject_reason FROM quarantine.listings ORDER BY id") == [
        *((i, "currency_invalid") for i in range(1, 9)),
        (11, "price_null_or_not_positive"),
        (12, "price_null_or_not_positive"),
        (13, "price_null_or_not_positive"),
        (14, "listing_created_on_null"),
    ]
    assert query(database, "SELECT id, currency FROM curated.listings ORDER BY id") == [
        (9, "USD"),
        (10, "XYZ"),
    ]


def test_booking_rules_in_order(source: Source) -> None:
    source.put(Listing(1))
    source.snapshot("2025-03-31")
    day = "2025-03-05 23:00:00"
    source.book(
        booking(1, None, 1, day, "2025-03-06", "2025-03-08"),
        booking(2, 1, None, day, "2025-03-06", "2025-03-08"),
        booking(3, 1, 1, None, "2025-03-06", "2025-03-08"),
        booking(4, 1, 1, day, "2025-03-06", None),
        booking(5, 1, 1, day, "2025-03-06", "2025-03-06"),
        booking(6, 1, 1, day, "2025-03-04", "2025-03-08", total="-1.00"),
        booking(7, 1, 1, day, "2025-03-06", "2025-03-08", total="-1.00", currency="U$D"),
        booking(8, 1, 1, day, "2025-03-06", "2025-03-08", currency="USD\n"),
        booking(9, 1, 1, day, "2025-03-06", "2025-03-08", currency="US", status="done"),
        booking(10, 1, 1, day, "2025-03-06", "2025-03-08", currency=None),
        booking(11, 1, 1, day, "2025-03-06", "2025-03-08", status=None),
        booking(12, 1, 2, day, "2025-03-06", "2025-03-08", status="done"),
        booking(13, 1, 2, day, "2025-03-06", "2025-03-08"),
        # Valid: check-in on the day of booking, noise that curation normalises.
        booking(14, 1, 1, day, "2025-03-05", "2025-03-08", currency=" eur", status=" Pending "),
    )
    database = source.run("2025-03-01", "2025-03-31")
    assert query(
        database, "SELECT booking_id, reject_reason FROM quarantine.bookings ORDER BY 1"
    ) == [
        (1, "user_id_null"),
        (2, "apartment_id_null"),
        (3, "booking_date_null"),
        (4, "stay_dates_null"),
        (5, "checkout_not_after_checkin"),
        (6, "checkin_before_booking"),
        (7, "total_price_null_or_negative"),
        (8, "currency_invalid"),
        (9, "currency_invalid"),
        (10, "currency_invalid"),
        (11, "invalid_status"),
        (12, "invalid_status"),
        (13, "unknown_apartment"),
    ]
    assert query(
        database, "SELECT booking_id, currency, booking_status, nights FROM curated.bookings"
    ) == [(14, "EUR", "pending", 3)]


def test_unknown_apartment_is_judged_on_the_version_of_the_booking_day(source: Source) -> None:
    source.put(Listing(1))
    source.snapshot("2025-03-01")
    source.remove(1)
    source.snapshot("2025-03-10")
    source.put(Listing(1, title="Back"))
    source.snapshot("2025-03-20")
    source.book(
        booking(1, 1, 1, "2025-03-09 23:59:59", "2025-03-25", "2025-03-27"),
        booking(2, 1, 1, "2025-03-10 00:00:00", "2025-03-25", "2025-03-27"),
        booking(3, 1, 1, "2025-03-19 12:00:00", "2025-03-25", "2025-03-27"),
        booking(4, 1, 1, "2025-03-20 08:00:00", "2025-03-25", "2025-03-27"),
        booking(5, 1, 99, "2025-03-05 08:00:00", "2025-03-25", "2025-03-27"),
    )
    database = source.run("2025-03-01", "2025-03-31")
    assert query(database, "SELECT booking_id FROM curated.bookings ORDER BY 1") == [(1,), (4,)]
    assert query(
        database, "SELECT booking_id, reject_reason FROM quarantine.bookings ORDER BY 1"
    ) == [
        (2, "unknown_apartment"),
        (3, "unknown_apartment"),
        (5, "unknown_apartment"),
    ]
    # curated.listings: the versions valid on the latest stamp; the history copied whole.
    assert query(database, "SELECT id, title FROM curated.listings") == [(1, "Back")]
    assert query(database, "SELECT count(*) FROM curated.listings_history") == [(2,)]


# --- KPIs --------------------------------------------------------------------------------------


def kpi(database: Path, table: str) -> list[tuple]:
    """A presentation table in the catalogue's column order, sorted by its key."""
    layout = tables.TABLES[f"presentation.{table}"]
    columns = ", ".join(f'"{c}"' for c in layout.column_names)
    key = ", ".join(f'"{c}"' for c in layout.key)
    return query(database, f'SELECT {columns} FROM presentation."{table}" ORDER BY {key}')


def test_a_period_sees_each_listing_as_it_was_on_its_last_day(source: Source) -> None:
    """L1 is deactivated and renamed on Wednesday 2025-03-12; L2 leaves the source on
    Wednesday 2025-03-19; L3, created 2025-03-11, is first seen on 03-12 (so valid from the
    beginning) and deactivated on 03-19."""
    source.put(
        Listing(1, title="Old", created="2025-01-15 09:00:00"),
        Listing(2, price="300.00", cityname="Boston", state="MA", created="2025-02-03 00:00:00"),
    )
    source.snapshot("2025-02-28")
    source.put(
        Listing(1, title="New", active=0, created="2025-01-15 09:00:00"),
        Listing(3, price="250.00", created="2025-03-11 12:00:00"),
    )
    source.snapshot("2025-03-12")
    source.remove(2)
    source.put(Listing(3, price="250.00", active=0, created="2025-03-11 12:00:00"))
    source.snapshot("2025-03-19")
    source.book(
        booking(1, 1, 1, "2025-02-10 10:00:00", "2025-02-20", "2025-02-23"),
        booking(2, 1, 1, "2025-03-04 10:00:00", "2025-03-05", "2025-03-08"),
        booking(3, 1, 1, "2025-03-11 10:00:00", "2025-03-20", "2025-03-22"),
        booking(4, 2, 2, "2025-03-18 10:00:00", "2025-03-25", "2025-03-27", total="300.00"),
    )
    database = source.run("2025-02-01", "2025-03-31")
    feb3, feb10, mar3 = date(2025, 2, 3), date(2025, 2, 10), date(2025, 3, 3)
    mar10, mar17 = date(2025, 3, 10), date(2025, 3, 17)
    hundred = Decimal("100.00")
    assert kpi(database, "avg_listing_price") == [
        (feb3, "USD", Decimal("300.00"), 1),
        (mar10, "USD", Decimal("250.00"), 1),
    ]
    # February: L1 all 28 nights, L2 from Feb 3 (26); March: no listing active on the 31st.
    assert kpi(database, "occupancy_rate") == [
        (date(2025, 2, 1), 54, 3, 3 / 54),
        (date(2025, 3, 1), 0, 0, None),
    ]
    # L1 keeps its city while inactive; L2 has no version on 03-23, so no city that week.
    assert kpi(database, "popular_locations") == [
        (feb10, "TX", "Austin", 1, 1),
        (mar3, "TX", "Austin", 1, 1),
        (mar10, "TX", "Austin", 1, 1),
    ]
    assert kpi(database, "top_listings") == [
        (feb10, "USD", 1, "Old", "TX", "Austin", hundred, 1, 1),
        (mar3, "USD", 1, "Old", "TX", "Austin", hundred, 1, 1),
        (mar10, "USD", 1, "New", "TX", "Austin", hundred, 1, 1),
        (mar17, "USD", 2, None, None, None, Decimal("300.00"), 1, 1),
    ]
    assert kpi(database, "bookings_per_user") == [
        (feb10, 1, 1),
        (mar3, 1, 1),
        (mar10, 1, 1),
        (mar17, 2, 1),
    ]


def test_a_listing_has_a_city_only_with_both_state_and_cityname(source: Source) -> None:
    source.put(
        Listing(1, state="  "),
        Listing(2, cityname=None),
        Listing(3),
        Listing(4, attributes=False),
    )
    source.snapshot("2025-03-31")
    source.book(
        *(
            booking(i, i, i, "2025-03-04 10:00:00", "2025-03-10", "2025-03-11", total=f"{i}00")
            for i in (1, 2, 3, 4)
        )
    )
    database = source.run("2025-03-01", "2025-03-31")
    week = date(2025, 3, 3)
    assert kpi(database, "popular_locations") == [(week, "TX", "Austin", 1, 1)]
    assert kpi(database, "top_listings") == [
        (week, "USD", 1, "Flat", "", "Austin", Decimal("100.00"), 1, 4),
        (week, "USD", 2, "Flat", "TX", None, Decimal("200.00"), 1, 3),
        (week, "USD", 3, "Flat", "TX", "Austin", Decimal("300.00"), 1, 2),
        (week, "USD", 4, "Flat", None, None, Decimal("400.00"), 1, 1),
    ]


def test_avg_listing_price_rounds_the_exact_mean_half_away_from_zero(source: Source) -> None:
    """2882.725 and 1.005 are exact means here; as DOUBLEs both fall just below the half."""
    source.put(
        Listing(1, price="2882.72", created="2025-03-03 09:00:00"),
        Listing(2, price="2882.73", created="2025-03-09 23:59:59"),
        Listing(3, price="1.00", created="2025-03-04 09:00:00", active=0),
        *(
            Listing(i, price=p, currency="GBP", created="2025-03-05 09:00:00")
            for i, p in ((4, "1.00"), (5, "1.00"), (6, "1.00"), (7, "1.02"))
        ),
    )
    source.snapshot("2025-03-31")
    database = source.run("2025-03-01", "2025-03-31")
    week = date(2025, 3, 3)
    assert kpi(database, "avg_listing_price") == [
        (week, "GBP", Decimal("1.01"), 4),
        (week, "USD", Decimal("2882.73"), 2),
    ]
