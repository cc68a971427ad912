"""Hostile values in every string column of the source (design.md, "Bad input gets a clear error
and loses nothing"): quotes, backslashes, emoji and other non-ASCII text, 10,000-character text,
SQL-looking and format-string text; extreme numbers and dates. Each row is curated exactly (only
spaces trimmed) or quarantined with its reason and its raw values, the KPIs equal the independent
reference's, and no value is ever run as SQL: the warehouse keeps every table the text names."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from benchmarks.reference import compare, parquet_differences, run_reference, snapshot_listings
from rental_platform import tables
from rental_platform.spark.manifest import committed_files
from rental_platform_tests.harness import Platform

START, END = date(2025, 1, 1), date(2025, 1, 12)
DAY = "2025-01-06 12:00:00"
INJECTION = "'); DROP TABLE presentation.top_listings; --"
STATUS_INJECTION = "confirmed'; DROP TABLE bookings; --"  # within VARCHAR(50)
HOSTILE = [
    INJECTION,
    "Robert'); DELETE FROM curated.bookings WHERE ('1'='1",
    "\"double\" 'single' \\backslash\\ `tick` ;",
    "🏠 Zürich — 東京 ñ ﷺ",
    "tab\there\nnew line\r\n",
    "%s %(title)s {0} ${HOME} $$ :1 ?",
    "",
]
LONG = "Ω" + "x'\"\\" * 2_500  # 10,001 characters of quotes and backslashes
MAX_PRICE = Decimal("99999999.99")  # the largest DECIMAL(10,2)


def _listing(n: int, text: str, currency: str = "USD", price: str = "100.00") -> tuple:
    created = "1970-01-01 00:00:00" if n % 2 else "9999-12-31 23:59:59"
    return (n, f"  {text[:250]}  ", text[:100], price, currency, created, 1, None)


APARTMENTS = [_listing(n, text) for n, text in enumerate(HOSTILE, start=1)] + [
    _listing(20, "the most expensive", price=str(MAX_PRICE)),
    _listing(21, "a hostile currency", currency="U'S\"D"),
    _listing(22, "an emoji currency", currency="€UR"),
]
ATTRIBUTES = [
    (n, text[:255], LONG, LONG, text[:100], text[:50]) for n, text in enumerate(HOSTILE, start=1)
]


def _booking(booking_id: int, apartment: int, **changes: str) -> tuple:
    row = {
        "checkin": "2025-01-10",
        "checkout": "2025-01-12",
        "total": "10.00",
        "currency": "USD",
        "status": "confirmed",
        **changes,
    }
    return (
        booking_id,
        booking_id,
        apartment,
        DAY,
        row["checkin"],
        row["checkout"],
        row["total"],
        row["currency"],
        row["status"],
    )


BOOKINGS = [_booking(100 + n, n) for n in range(1, len(HOSTILE) + 1)] + [
    _booking(200, 20, total=str(MAX_PRICE)),
    _booking(201, 20, total=str(MAX_PRICE)),
    # A stay to the last day a date can hold, and one from 1970: curated and quarantined.
    _booking(202, 1, checkin="2025-01-06", checkout="9999-12-31"),
    _booking(203, 1, checkin="1970-01-01", checkout="1970-01-02"),
    _booking(204, 1, status=STATUS_INJECTION),
    _booking(205, 1, currency="U'S\"D"),
    _booking(206, 1, currency="ÜSD"),
    _booking(207, 1, currency="\\'S"),
]
VIEWS = [(n, n, DAY, 1, text[:100]) for n, text in enumerate(HOSTILE, start=1)]


@pytest.fixture(scope="module")
def hostile(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The platform's run over the hostile source; returns the reference's warehouse."""
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", APARTMENTS)
    platform.execute(
        "INSERT INTO apartment_attributes (id, cityname, body, amenities, address, state) "
        "VALUES (%s,%s,%s,%s,%s,%s)",
        ATTRIBUTES,
    )
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", BOOKINGS)
    platform.execute("INSERT INTO user_viewing VALUES (%s,%s,%s,%s,%s)", VIEWS)
    platform.settings = dataclasses.replace(platform.settings, max_quarantine_share=1.0)
    platform.run(START, END)
    folder = tmp_path_factory.mktemp("reference")
    reference, history = folder / "reference.duckdb", folder / "history.duckdb"
    snapshot_listings(history, platform.settings.mysql, END)
    run_reference(platform.settings.mysql, START, END, reference, history)
    return reference


def test_the_text_is_curated_exactly(platform: Platform, hostile: Path) -> None:
    """Only spaces are trimmed (kpis.md: `trim` means spaces only): tabs, newlines, quotes,
    backslashes and every other character survive byte for byte, 10,000 characters long."""
    curated = dict(
        (row[0], row[1:])
        for row in platform.lake(
            tables.CURATED_LISTINGS,
            "SELECT id, title, source, cityname, state, body, amenities FROM t",
        )
    )
    for n, text in enumerate(HOSTILE, start=1):
        assert curated[n] == (
            text[:250].strip(" "),
            text[:100].strip(" "),
            text[:255].strip(" "),
            text[:50].strip(" "),
            LONG,
            LONG,
        ), n
    views = platform.lake(tables.CURATED_USER_VIEWING, "SELECT user_id, call_to_action FROM t")
    assert sorted(views) == [(n, text[:100]) for n, text in enumerate(HOSTILE, start=1)]


def test_hostile_currencies_and_statuses_are_quarantined_unchanged(
    platform: Platform, hostile: Path
) -> None:
    listings = platform.lake(
        tables.QUARANTINE_LISTINGS, "SELECT id, currency, reject_reason FROM t ORDER BY id"
    )
    assert listings == [(21, "U'S\"D", "currency_invalid"), (22, "€UR", "currency_invalid")]
    bookings = platform.lake(
        tables.QUARANTINE_BOOKINGS,
        "SELECT booking_id, currency, booking_status, reject_reason FROM t ORDER BY booking_id",
    )
    assert bookings == [
        (203, "USD", "confirmed", "checkin_before_booking"),
        (204, "USD", STATUS_INJECTION, "invalid_status"),
        (205, "U'S\"D", "confirmed", "currency_invalid"),
        (206, "ÜSD", "confirmed", "currency_invalid"),
        (207, "\\'S", "confirmed", "currency_invalid"),
    ]


def test_extreme_numbers_and_dates_are_curated_exactly(platform: Platform, hostile: Path) -> None:
    stays = platform.lake(
        tables.CURATED_BOOKINGS,
        "SELECT booking_id, total_price, nights FROM t WHERE booking_id >= 200 ORDER BY 1",
    )
    longest = (date(9999, 12, 31) - date(2025, 1, 6)).days
    assert stays == [(200, MAX_PRICE, 2), (201, MAX_PRICE, 2), (202, Decimal("10.00"), longest)]
    revenue = platform.warehouse(
        "SELECT revenue, booking_count FROM presentation.top_listings WHERE apartment_id = 20"
    )
    assert revenue == [(2 * MAX_PRICE, 2)]


def test_the_kpis_equal_the_reference(platform: Platform, hostile: Path) -> None:
    differences = compare(Path(platform.settings.warehouse.database), hostile)
    assert differences == {t.name: [] for t in tables.tables_of(tables.Layer.PRESENTATION)}
    titles = {
        title for (title,) in platform.warehouse("SELECT title FROM presentation.top_listings")
    }
    assert INJECTION in titles  # published as text, never run


@pytest.mark.parametrize(
    "table",
    [
        tables.CURATED_LISTINGS,
        tables.QUARANTINE_LISTINGS,
        tables.CURATED_BOOKINGS,
        tables.QUARANTINE_BOOKINGS,
        tables.CURATED_USER_VIEWING,
    ],
    ids=lambda t: t.id,
)
def test_the_lake_equals_the_reference(
    platform: Platform, hostile: Path, table: tables.Table
) -> None:
    files = committed_files(platform.settings.lake_root, table.id)
    assert parquet_differences(files, hostile, f"{table.layer}.{table.name}", table) == []
