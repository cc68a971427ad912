"""The sample-data seeder against a real MariaDB: the shape the platform relies on, every kind
of dirt the curated rules must catch, and determinism (same seed, same tables).

Needs a MariaDB 10.6+ server: RENTAL_TEST_MYSQL_SERVER (default mysql://root@127.0.0.1:3306);
a throwaway database `rental_test_seed_<pid>` is created and dropped.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pymysql
import pytest

from rental_platform.seed import SCALES, fill, generate, load, seed_source
from rental_platform.seed.load import (
    APARTMENT_COLUMNS,
    ATTRIBUTE_COLUMNS,
    BOOKING_COLUMNS,
    SOURCE_TABLES,
    VIEW_COLUMNS,
    schema_statements,
    secondary_keys,
)
from rental_platform.settings import parse_mysql_url

SCALE = SCALES["tiny"]
DATABASE = f"rental_test_seed_{os.getpid()}"
SERVER_URL = os.environ.get("RENTAL_TEST_MYSQL_SERVER", "mysql://root@127.0.0.1:3306")


def _server_kwargs() -> dict[str, Any]:
    """The test server's connection, without a database (it may not exist yet)."""
    kwargs = parse_mysql_url(f"{SERVER_URL}/{DATABASE}").pymysql_kwargs()
    del kwargs["database"]
    return kwargs


KWARGS = {**_server_kwargs(), "database": DATABASE}


@pytest.fixture(scope="module")
def counts() -> Iterator[dict[str, int]]:
    try:
        yield seed_source(KWARGS, SCALE, seed=42)
    finally:
        with pymysql.connect(**_server_kwargs()) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")


@pytest.fixture(scope="module")
def db(counts: dict[str, int]) -> Iterator[Any]:
    # autocommit: an open read transaction would hold metadata locks that block re-seeding.
    with pymysql.connect(**KWARGS, autocommit=True) as connection, connection.cursor() as cursor:
        yield cursor


def one(cursor: Any, sql: str) -> Any:
    cursor.execute(sql)
    return cursor.fetchone()[0]


def checksums(cursor: Any) -> dict[str, int]:
    cursor.execute(f"CHECKSUM TABLE {', '.join(SOURCE_TABLES)}")
    return {name.split(".")[-1]: value for name, value in cursor.fetchall()}


def test_counts_match_the_scale(counts: dict[str, int], db: Any) -> None:
    without_attributes = one(
        db,
        "SELECT COUNT(*) FROM apartments a"
        " LEFT JOIN apartment_attributes t ON t.id = a.id WHERE t.id IS NULL",
    )
    assert without_attributes >= 1
    assert counts == {
        "apartments": SCALE.listings,
        "apartment_attributes": SCALE.listings - without_attributes,
        "user_viewing": SCALE.views,
        "bookings": SCALE.bookings,
    }


def test_schema_is_the_contract(db: Any) -> None:
    """Columns (order, type, nullability) and keys as source_schema.sql declares them,
    although the big tables' indexes are built after loading."""
    for table, statement in schema_statements().items():
        declared = [
            (m.group(1), m.group(2).lower().replace(" ", ""), m.group(3) is None)
            for m in re.finditer(
                r"^\s*(\w+)\s+([A-Z]+(?:\(\d+(?:,\d+)?\))?)\s+(NOT NULL)?", statement, re.M
            )
            if m.group(1) not in ("KEY", "CREATE")
        ]
        db.execute(
            "SELECT column_name, column_type, is_nullable = 'YES' FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (DATABASE, table),
        )
        # MariaDB reports integer display widths (bigint(20)) the contract leaves out.
        actual = [
            (n, re.sub(r"^((?:big)?int)\(\d+\)$", r"\1", t), bool(y)) for n, t, y in db.fetchall()
        ]
        assert actual == declared, table
        db.execute(f"SHOW CREATE TABLE `{table}`")
        created = db.fetchone()[1]
        for key, columns in secondary_keys(statement):
            assert f"KEY `{key}` (`{columns}`)" in created
        assert ("PRIMARY KEY (`" in created) == ("PRIMARY KEY" in statement)


def test_column_lists_are_the_contracts(db: Any) -> None:
    """The column lists that seeding and the changing source write by."""
    lists = {
        "apartments": APARTMENT_COLUMNS,
        "apartment_attributes": ATTRIBUTE_COLUMNS,
        "bookings": BOOKING_COLUMNS,
        "user_viewing": VIEW_COLUMNS,
    }
    for table, columns in lists.items():
        db.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (DATABASE, table),
        )
        assert tuple(row[0] for row in db.fetchall()) == columns, table


def test_same_seed_same_tables_other_seed_differs(counts: dict[str, int], db: Any) -> None:
    first = checksums(db)
    assert all(first.values())
    seed_source(KWARGS, SCALE, seed=42)
    assert checksums(db) == first
    seed_source(KWARGS, SCALE, seed=7)
    other = checksums(db)
    assert all(other[table] != first[table] for table in SOURCE_TABLES)
    seed_source(KWARGS, SCALE, seed=42)  # leave the module's data as the other tests expect
    assert checksums(db) == first


def test_the_rows_do_not_depend_on_the_parts_views_are_loaded_in(
    counts: dict[str, int], db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = checksums(db)  # CHECKSUM TABLE sums the rows' checksums: their order is left out
    monkeypatch.setattr(load, "BROWSE_PARTS", 1)
    assert seed_source(KWARGS, SCALE, seed=42) == counts
    assert checksums(db) == first


def test_row_ranges_cover_each_row_once() -> None:
    assert fill.row_ranges(10, 4) == [(1, 2), (3, 5), (6, 7), (8, 10)]
    for rows, parts in [(1, 16), (3, 16), (17, 16), (1_000_003, 16)]:
        ranges = fill.row_ranges(rows, parts)
        assert len(ranges) == min(rows, parts)
        rows_of = [n for low, high in ranges for n in range(low, high + 1)]
        assert rows_of == list(range(1, rows + 1))


# A currency that is a three-letter code after upper/trim (kpis.md, "Conventions").
THREE_LETTERS = "UPPER(TRIM(currency)) REGEXP '^[A-Z]{3}$'"
LISTING_DIRT = {
    "price null": "price IS NULL",
    "price zero": "price = 0",
    "price negative": "price < 0",
    "currency null": "currency IS NULL",
    "currency empty": "TRIM(currency) = ''",
    "currency invalid": f"TRIM(currency) <> '' AND NOT {THREE_LETTERS}",
    "currency noise": "currency <> BINARY UPPER(TRIM(currency)) AND TRIM(currency) <> ''",
    "created null": "listing_created_on IS NULL",
    "is_active null": "is_active IS NULL",
    "inactive": "is_active = 0",
}
BOOKING_DIRT = {
    "user null": "user_id IS NULL",
    "apartment null": "apartment_id IS NULL",
    "booking_date null": "booking_date IS NULL",
    "checkin null": "checkin_date IS NULL",
    "checkout null": "checkout_date IS NULL",
    "checkout before checkin": "checkout_date < checkin_date",
    "checkout on checkin": "checkout_date = checkin_date",
    "checkin before the booking day": "checkin_date < DATE(booking_date)",
    "total null": "total_price IS NULL",
    "total negative": "total_price < 0",
    "status noise": "booking_status <> BINARY LOWER(TRIM(booking_status))"
    " AND LOWER(TRIM(booking_status)) IN ('confirmed', 'cancelled', 'pending')",
    "status invalid": "LOWER(TRIM(booking_status)) NOT IN ('confirmed', 'cancelled', 'pending')",
    "status null": "booking_status IS NULL",
    "refunded": "booking_status = 'refunded'",
    "currency noise": "currency <> BINARY UPPER(TRIM(currency))",
    "currency empty": "currency = ''",
    "currency null": "currency IS NULL",
    "currency invalid": f"TRIM(currency) <> '' AND NOT {THREE_LETTERS}",
    "orphan listing": "apartment_id NOT IN (SELECT id FROM apartments)",
    "booked at 23:59:59": "TIME(booking_date) = '23:59:59'",
}
VIEW_DIRT = {
    "user null": "user_id IS NULL",
    "apartment null": "apartment_id IS NULL",
    "viewed_at null": "viewed_at IS NULL",
    "orphan listing": "apartment_id NOT IN (SELECT id FROM apartments)",
}


@pytest.mark.parametrize(
    ("table", "kind", "where"),
    [("apartments", k, w) for k, w in LISTING_DIRT.items()]
    + [("bookings", k, w) for k, w in BOOKING_DIRT.items()]
    + [("user_viewing", k, w) for k, w in VIEW_DIRT.items()],
)
def test_each_kind_of_dirt_occurs_at_a_small_rate(
    db: Any, table: str, kind: str, where: str
) -> None:
    rows = one(db, f"SELECT COUNT(*) FROM {table} WHERE {where}")
    total = one(db, f"SELECT COUNT(*) FROM {table}")
    assert 1 <= rows <= max(3, 0.2 * total), kind


# Each kind of dirt as a predicate that matches its rows and no others, so its count is exact.
EXACT_LISTING_DIRT = {
    "price_null": "price IS NULL",
    "price_zero": "price = 0",
    "price_negative": "price < 0",
    "currency_null": "currency IS NULL",
    "currency_empty": "TRIM(currency) = ''",
    "currency_invalid": f"TRIM(currency) <> '' AND NOT {THREE_LETTERS}",
    "currency_noise": f"currency <> BINARY UPPER(TRIM(currency)) AND {THREE_LETTERS}",
    "created_null": "listing_created_on IS NULL",
    "active_null": "is_active IS NULL",
    "no_attributes": "id NOT IN (SELECT id FROM apartment_attributes)",
    "location_null": "id IN (SELECT id FROM apartment_attributes"
    " WHERE cityname IS NULL OR state IS NULL)",
}
EXACT_BOOKING_DIRT = {
    "user_null": "user_id IS NULL",
    "apartment_null": "apartment_id IS NULL",
    "booking_date_null": "booking_date IS NULL",
    "checkin_null": "checkin_date IS NULL",
    "checkout_null": "checkout_date IS NULL",
    "dates_reversed": "checkout_date <= checkin_date",
    "checkin_before_booking": "checkin_date < DATE(booking_date)",
    "total_null": "total_price IS NULL",
    "total_negative": "total_price < 0",
    "currency_invalid": f"currency IS NULL OR NOT {THREE_LETTERS}",
    "status_invalid": "booking_status IS NULL"
    " OR LOWER(TRIM(booking_status)) NOT IN ('confirmed', 'cancelled', 'pending')",
    "status_noise": "booking_status <> BINARY LOWER(TRIM(booking_status))"
    " AND LOWER(TRIM(booking_status)) IN ('confirmed', 'cancelled', 'pending')",
    "currency_noise": f"currency <> BINARY UPPER(TRIM(currency)) AND {THREE_LETTERS}",
    "orphan": "apartment_id NOT IN (SELECT id FROM apartments)",
}


def test_exact_dirt_counts(db: Any) -> None:
    """Every kind of dirt hits exactly the planned number of rows (end_of_day aside: a clean
    booking may fall on 23:59:59 by chance)."""
    assert set(EXACT_LISTING_DIRT) == set(generate.listing_dirt_counts(SCALE.listings))
    assert set(EXACT_BOOKING_DIRT) | {"end_of_day"} == set(fill.booking_dirt(SCALE, 42).counts())
    for kind, count in generate.listing_dirt_counts(SCALE.listings).items():
        assert one(db, f"SELECT COUNT(*) FROM apartments WHERE {EXACT_LISTING_DIRT[kind]}") == (
            count
        ), kind
    for kind, count in fill.booking_dirt(SCALE, 42).counts().items():
        if kind != "end_of_day":
            where = EXACT_BOOKING_DIRT[kind]
            assert one(db, f"SELECT COUNT(*) FROM bookings WHERE {where}") == count, kind


def test_checkin_before_booking_breaks_only_that_rule(db: Any) -> None:
    """Check-in 1-3 days before the booking day, and every earlier and later rule holds."""
    db.execute(
        "SELECT DATEDIFF(DATE(booking_date), checkin_date), checkout_date > checkin_date,"
        f" user_id IS NOT NULL AND apartment_id IS NOT NULL AND total_price >= 0"
        f" AND {THREE_LETTERS}"
        " AND LOWER(TRIM(booking_status)) IN ('confirmed', 'cancelled', 'pending')"
        " FROM bookings WHERE checkin_date < DATE(booking_date)"
    )
    rows = db.fetchall()
    assert len(rows) == fill.booking_dirt(SCALE, 42).counts()["checkin_before_booking"]
    assert all(1 <= days <= 3 and after and valid for days, after, valid in rows)


def test_every_invalid_currency_occurs(db: Any) -> None:
    # No DISTINCT: it would take '' and '  ' for the same (PAD SPACE).
    db.execute(f"SELECT currency FROM bookings WHERE currency IS NULL OR NOT {THREE_LETTERS}")
    assert {row[0] for row in db.fetchall()} == set(fill.BOOKING_INVALID_CURRENCIES)
    db.execute(
        f"SELECT currency FROM apartments WHERE TRIM(currency) <> '' AND NOT {THREE_LETTERS}"
    )
    assert {row[0] for row in db.fetchall()} <= set(generate.LISTING_INVALID_CURRENCIES)


def test_rejected_listings_get_little_traffic(db: Any) -> None:
    """Bookings of listings the curated rules reject (quarantined as unknown_apartment) occur,
    but stay a small share whichever listings the dirt hit."""
    rejected = one(
        db,
        "SELECT COUNT(*) FROM bookings WHERE apartment_id IN (SELECT id FROM apartments"
        f" WHERE price IS NULL OR price <= 0 OR currency IS NULL OR NOT {THREE_LETTERS}"
        " OR listing_created_on IS NULL)",
    )
    assert 1 <= rejected < 0.05 * SCALE.bookings


def test_attribute_dirt(db: Any) -> None:
    assert one(db, "SELECT COUNT(*) FROM apartment_attributes WHERE cityname IS NULL") >= 1
    assert one(db, "SELECT COUNT(*) FROM apartment_attributes WHERE state IS NULL") >= 1


def test_exact_duplicate_views(db: Any) -> None:
    duplicated = one(
        db,
        "SELECT COUNT(*) FROM (SELECT 1 FROM user_viewing"
        " GROUP BY user_id, apartment_id, viewed_at, is_wishlisted, BINARY call_to_action"
        " HAVING COUNT(*) > 1) d",
    )
    assert 1 <= duplicated <= 0.03 * SCALE.views


def test_same_city_name_in_two_states(db: Any) -> None:
    db.execute(
        "SELECT cityname FROM apartment_attributes WHERE state IS NOT NULL"
        " GROUP BY cityname HAVING COUNT(DISTINCT state) > 1"
    )
    assert {"Springfield", "Portland"} <= {row[0] for row in db.fetchall()}


def test_city_popularity_is_skewed(db: Any) -> None:
    db.execute(
        "SELECT COUNT(*) FROM bookings b JOIN apartment_attributes t ON t.id = b.apartment_id"
        " GROUP BY t.cityname, t.state ORDER BY 1 DESC"
    )
    per_city = [row[0] for row in db.fetchall()]
    assert len(per_city) >= 10
    assert sum(per_city[:3]) > 0.5 * sum(per_city)


def test_activity_falls_in_the_range(db: Any) -> None:
    start, end = SCALE.start, SCALE.start + timedelta(days=SCALE.days)
    for table, column in (("bookings", "booking_date"), ("user_viewing", "viewed_at")):
        db.execute(f"SELECT MIN({column}), MAX({column}) FROM {table}")
        low, high = db.fetchone()
        assert low.date() >= start and high.date() < end, table
        assert (high.date() - low.date()).days >= SCALE.days - 2, table


def test_bookings_are_numbered_in_time_order(db: Any) -> None:
    """As an application numbers them: a booking's day is never before the previous one's.
    The views are inserted in time order too, in parts, which the platform's reads rely on
    for speed only (test_extract)."""
    later = one(
        db,
        "SELECT COUNT(*) FROM bookings a JOIN bookings b ON b.booking_id = a.booking_id + 1"
        " WHERE DATE(b.booking_date) < DATE(a.booking_date)",
    )
    dated = one(db, "SELECT COUNT(*) FROM bookings WHERE booking_date IS NOT NULL")
    assert later == 0 and dated > 0.99 * SCALE.bookings


def test_a_part_of_the_browsing_views_computes_its_row_numbers_once_in_time_order(
    db: Any,
) -> None:
    """A part's row numbers are a materialised derived table (EXPLAIN shows it DERIVED, not
    merged into the query, where each row's number would be computed again at each of its
    uses), and its rows still come out in row order: hour after hour."""
    rows = 1_000
    with pymysql.connect(**KWARGS, autocommit=True) as connection, connection.cursor() as cursor:
        load._session(cursor)
        listings = generate.generate_listings(SCALE, 42)
        listing_slots, hour_slots = load._create_pick_tables(cursor, SCALE, listings)
        sql = fill.browse_views_sql(SCALE, 42, rows, listing_slots, hour_slots, (1, rows))
        cursor.execute(f"EXPLAIN {sql}")
        assert "DERIVED" in [row[1] for row in cursor.fetchall()]
        # The contract's table, shadowed in this session only, numbering the rows as inserted.
        contract = schema_statements()["user_viewing"]
        cursor.execute(contract.replace("CREATE TABLE", "CREATE TEMPORARY TABLE", 1))
        cursor.execute("ALTER TABLE user_viewing ADD COLUMN n SERIAL")
        cursor.execute(sql)
        cursor.execute(
            "SELECT COUNT(*), COUNT(DISTINCT hour), SUM(hour < previous) FROM"
            " (SELECT DATE_FORMAT(viewed_at, '%Y%m%d%H') AS hour,"
            "  LAG(DATE_FORMAT(viewed_at, '%Y%m%d%H')) OVER (ORDER BY n) AS previous"
            "  FROM user_viewing WHERE viewed_at IS NOT NULL) t"
        )
        dated, hours, earlier = cursor.fetchone()
    assert dated > 0.99 * rows and hours > 100 and earlier == 0


def test_stays_are_plausible(db: Any) -> None:
    clean = "checkout_date > checkin_date AND checkin_date >= DATE(booking_date)"
    db.execute(
        "SELECT MIN(DATEDIFF(checkout_date, checkin_date)), MAX(DATEDIFF(checkout_date,"
        " checkin_date)), MIN(DATEDIFF(checkin_date, booking_date)),"
        f" MAX(DATEDIFF(checkin_date, booking_date)) FROM bookings WHERE {clean}"
    )
    assert db.fetchone() == (1, 14, 0, 60)
    crossing = one(
        db,
        f"SELECT COUNT(*) FROM bookings WHERE {clean}"
        " AND LAST_DAY(checkin_date) < checkout_date - INTERVAL 1 DAY",
    )
    assert crossing >= 1


def test_most_bookings_confirmed_and_mostly_usd(db: Any) -> None:
    db.execute("SELECT LOWER(TRIM(booking_status)), COUNT(*) FROM bookings GROUP BY 1")
    statuses = dict(db.fetchall())
    assert statuses["confirmed"] > 0.7 * SCALE.bookings
    assert statuses["cancelled"] > statuses["pending"] > 0
    db.execute("SELECT UPPER(TRIM(currency)), COUNT(*) FROM apartments GROUP BY 1")
    currencies = dict(db.fetchall())
    assert currencies["USD"] > 0.7 * SCALE.listings and currencies["EUR"] and currencies["GBP"]


def test_repeat_customers_and_busier_weekends(db: Any) -> None:
    db.execute(
        "SELECT COUNT(*) FROM bookings WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY 1 DESC"
    )
    per_user = [row[0] for row in db.fetchall()]
    top = per_user[: len(per_user) // 20]  # the busiest 5% of customers
    assert sum(top) > 0.25 * sum(per_user)
    weekend = one(db, "SELECT COUNT(*) FROM bookings WHERE DAYOFWEEK(booking_date) IN (1, 7)")
    midweek = one(db, "SELECT COUNT(*) FROM bookings WHERE DAYOFWEEK(booking_date) IN (3, 4)")
    assert weekend > 1.2 * midweek


def test_views_precede_many_bookings(db: Any) -> None:
    preceded = one(
        db,
        "SELECT COUNT(*) FROM bookings b WHERE EXISTS (SELECT 1 FROM user_viewing v"
        " WHERE v.user_id = b.user_id AND v.apartment_id = b.apartment_id"
        " AND v.viewed_at <= b.booking_date)",
    )
    assert preceded > 0.5 * SCALE.bookings
    db.execute("SELECT call_to_action, COUNT(*) FROM user_viewing GROUP BY 1")
    assert set(dict(db.fetchall())) == {"contact_owner", "book_now", "none"}
    assert 0 < one(db, "SELECT AVG(is_wishlisted) FROM user_viewing") < 0.3


def test_totals_follow_the_listing_price(db: Any) -> None:
    """A night costs about a month's asking price / 30 (x1.1..1.45), in the listing's currency."""
    db.execute(
        "SELECT b.total_price / DATEDIFF(b.checkout_date, b.checkin_date) / a.price * 30,"
        " b.currency = BINARY a.currency FROM bookings b JOIN apartments a ON a.id = b.apartment_id"
        " JOIN apartment_attributes t ON t.id = a.id WHERE t.price_type = 'Monthly' AND a.price > 0"
        " AND b.total_price > 0 AND b.checkout_date > b.checkin_date"
        " AND BINARY a.currency IN ('USD', 'EUR', 'GBP')"
        " AND BINARY b.currency IN ('USD', 'EUR', 'GBP')"
    )
    rows = db.fetchall()
    assert len(rows) > 0.5 * SCALE.bookings
    assert all(1.0 < float(ratio) < 1.6 and same for ratio, same in rows)


def test_rejects_bad_input_before_touching_the_server() -> None:
    with pytest.raises(ValueError, match="identifier"):
        seed_source({**KWARGS, "database": "x`; DROP DATABASE mysql; --"}, SCALE)
    with pytest.raises(ValueError, match="bookings"):
        seed_source(KWARGS, dataclasses.replace(SCALE, bookings=10))


def test_a_killed_load_stops_the_other_connection_at_its_next_part() -> None:
    """KILL the connection loading the bookings: seeding fails with the server's error, and
    the connection loading views stops at its next part instead of loading the rest."""
    scale = SCALES["small"]
    database = f"{DATABASE}_killed"
    outcome: dict[str, BaseException] = {}

    def seed() -> None:
        try:
            seed_source({**KWARGS, "database": database}, scale)
        except BaseException as error:  # the test reads it below
            outcome["error"] = error

    seeding = threading.Thread(target=seed)
    seeding.start()
    try:
        with (
            pymysql.connect(**_server_kwargs(), autocommit=True) as connection,
            connection.cursor() as cursor,
        ):
            loader = None
            while loader is None and seeding.is_alive():
                cursor.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s"
                    " AND INFO LIKE '%%INSERT INTO bookings%%' AND ID != CONNECTION_ID()",
                    (database,),
                )
                row = cursor.fetchone()
                loader = row[0] if row else None
            assert loader is not None, "the bookings were never seen loading"
            cursor.execute(f"KILL {int(loader)}")
            seeding.join()
            assert isinstance(outcome.get("error"), pymysql.err.OperationalError)
            cursor.execute(f"SELECT COUNT(*) FROM `{database}`.user_viewing")
            assert cursor.fetchone()[0] < scale.views // 2
    finally:
        seeding.join()
        with pymysql.connect(**_server_kwargs()) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
