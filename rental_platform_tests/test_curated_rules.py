"""Each curated rule of kpis.md on real rows: a row that breaks it lands in quarantine with the
reason of the first rule it breaks and its raw values unchanged; every raw row is accounted for."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import dagster as dg
import duckdb
import pytest

from rental_platform import contract, tables
from rental_platform.assets.checks import asset_key
from rental_platform.spark.manifest import CommitLog, store_for
from rental_platform_tests.harness import Platform

DAY = "2025-01-06 12:00:00"
APARTMENTS = [
    (1, " Loft ", "web", "100.00", "USD", "2025-01-01 00:00:00", 1, None),
    (2, "zero", "web", "0.00", "USD", "2025-01-01 00:00:00", 1, None),
    (3, "no price", "web", None, "USD", "2025-01-01 00:00:00", 1, None),
    (4, "blank currency", "web", "50.00", "  ", "2025-01-01 00:00:00", 1, None),
    (5, "no creation", "web", "50.00", "EUR", None, 1, None),
    (6, "noisy", "web", "80.00", " usd ", "2025-01-02 00:00:00", None, None),
    (7, "not a code", "web", "50.00", "EURO", "2025-01-01 00:00:00", 1, None),
    (8, "not letters", "web", "50.00", "U$D", "2025-01-01 00:00:00", 1, None),
]
BOOKINGS = [
    (10, None, 1, DAY, "2025-01-10", "2025-01-12", "10.00", "USD", "confirmed"),
    (11, 1, None, DAY, "2025-01-10", "2025-01-12", "10.00", "USD", "confirmed"),
    (12, 1, 1, None, "2025-01-10", "2025-01-12", "10.00", "USD", "confirmed"),
    (13, 1, 1, DAY, None, "2025-01-12", "10.00", "USD", "confirmed"),
    (14, 1, 1, DAY, "2025-01-12", "2025-01-12", "10.00", "USD", "confirmed"),
    (15, 1, 1, DAY, "2025-01-10", "2025-01-12", "-1.00", "USD", "confirmed"),
    (16, 1, 1, DAY, "2025-01-10", "2025-01-12", None, "USD", "confirmed"),
    (17, 1, 1, DAY, "2025-01-10", "2025-01-12", "10.00", "USD", "refunded"),
    (18, 1, 999, DAY, "2025-01-10", "2025-01-12", "10.00", "USD", "confirmed"),
    (19, 1, 2, DAY, "2025-01-10", "2025-01-12", "10.00", "USD", "confirmed"),
    (20, 1, 6, DAY, "2025-01-10", "2025-01-13", "30.00", " usd", " CONFIRMED "),
    (21, None, 1, DAY, "2025-01-12", "2025-01-10", "10.00", "USD", "confirmed"),
    (22, 2, 1, "2025-01-05 23:59:59", "2025-01-20", "2025-01-21", "5.00", "USD", "Pending"),
    # A stay cannot start before it was booked; one that starts the same day can.
    (23, 1, 1, DAY, "2025-01-05", "2025-01-07", "10.00", "USD", "confirmed"),
    (24, 3, 1, DAY, "2025-01-06", "2025-01-07", "10.00", "usd", "confirmed"),
    # A currency is three letters after upper/trim, nothing else (not even a final newline).
    (25, 1, 1, DAY, "2025-01-10", "2025-01-12", "10.00", "U$D", "confirmed"),
    (26, 1, 1, DAY, "2025-01-10", "2025-01-12", "10.00", "USD\n", "confirmed"),
    (27, 1, 1, DAY, "2025-01-10", "2025-01-12", "10.00", None, "confirmed"),
]
VIEW = (1, 1, "2025-01-06 10:00:00", 1, "book_now")
VIEWS = [
    VIEW,
    VIEW,
    VIEW,
    (None, 1, DAY, 0, "none"),
    (1, None, DAY, 0, "none"),
    (1, 1, None, 0, "none"),
    (2, 1, "2025-01-07 12:00:00", None, "none"),
    # A null call_to_action is valid, and equals another null: these two collapse to one.
    (3, 1, "2025-01-07 13:00:00", 0, None),
    (3, 1, "2025-01-07 13:00:00", None, None),
]


@pytest.fixture(scope="module")
def curated(platform: Platform) -> Platform:
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", APARTMENTS)
    platform.execute(
        "INSERT INTO apartment_attributes (id, cityname, state) VALUES (1, '  Austin ', 'TX')"
    )
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", BOOKINGS)
    platform.execute("INSERT INTO user_viewing VALUES (%s,%s,%s,%s,%s)", VIEWS)
    # Nearly every row here is dirty on purpose: lift the quarantine-share limit.
    platform.settings = dataclasses.replace(platform.settings, max_quarantine_share=1.0)
    platform.outcomes = platform.run(date(2025, 1, 1), date(2025, 1, 12))
    return platform


def reasons(platform: Platform, table: tables.Table, key: str) -> dict:
    return dict(platform.lake(table, f"SELECT {key}, reject_reason FROM t"))


def test_listing_rules(curated: Platform) -> None:
    assert reasons(curated, tables.QUARANTINE_LISTINGS, "id") == {
        2: "price_null_or_not_positive",
        3: "price_null_or_not_positive",
        4: "currency_invalid",
        5: "listing_created_on_null",
        7: "currency_invalid",
        8: "currency_invalid",
    }
    kept = curated.lake(
        tables.CURATED_LISTINGS,
        "SELECT id, title, currency, is_active, cityname FROM t ORDER BY id",
    )
    # Strings trimmed, currency upper-cased, a null is_active read as false, and a listing
    # without attributes keeps null attribute columns.
    assert kept == [(1, "Loft", "USD", True, "Austin"), (6, "noisy", "USD", False, None)]


def test_booking_rules_in_order(curated: Platform) -> None:
    assert reasons(curated, tables.QUARANTINE_BOOKINGS, "booking_id") == {
        10: "user_id_null",
        11: "apartment_id_null",
        12: "booking_date_null",
        13: "stay_dates_null",
        14: "checkout_not_after_checkin",
        15: "total_price_null_or_negative",
        16: "total_price_null_or_negative",
        17: "invalid_status",
        18: "unknown_apartment",
        19: "unknown_apartment",  # listing 2 exists but is quarantined
        21: "user_id_null",  # breaks two rules: the first one counts
        23: "checkin_before_booking",
        25: "currency_invalid",
        26: "currency_invalid",
        27: "currency_invalid",
    }


def test_quarantine_keeps_raw_values(curated: Platform) -> None:
    rows = curated.lake(
        tables.QUARANTINE_BOOKINGS,
        "SELECT booking_id, total_price, booking_status FROM t WHERE booking_id IN (15, 17)"
        " ORDER BY booking_id",
    )
    assert rows == [(15, Decimal("-1.00"), "confirmed"), (17, Decimal("10.00"), "refunded")]


def test_valid_bookings_are_normalised(curated: Platform) -> None:
    rows = curated.lake(
        tables.CURATED_BOOKINGS,
        "SELECT booking_id, booking_date, currency, booking_status, nights FROM t ORDER BY 1",
    )
    assert rows == [
        (20, datetime(2025, 1, 6, 12, tzinfo=UTC), "USD", "confirmed", 3),
        (22, datetime(2025, 1, 5, 23, 59, 59, tzinfo=UTC), "USD", "pending", 1),
        (24, datetime(2025, 1, 6, 12, tzinfo=UTC), "USD", "confirmed", 1),
    ]


def test_day_boundaries_are_utc(curated: Platform) -> None:
    """A booking made at 23:59:59 on Sunday 2025-01-05 is in that day's partition."""
    state = CommitLog(store_for(curated.settings.lake_root)).head()
    (parquet,) = state.files(tables.CURATED_BOOKINGS.id, ["2025-01-05"])
    assert duckdb.sql(f"SELECT booking_id FROM '{parquet}'").fetchall() == [(22,)]


def test_view_rules_and_duplicates(curated: Platform) -> None:
    assert sorted(curated.lake(tables.QUARANTINE_USER_VIEWING, "SELECT reject_reason FROM t")) == [
        ("apartment_id_null",),
        ("user_id_null",),
        ("viewed_at_null",),
    ]
    kept = curated.lake(
        tables.CURATED_USER_VIEWING, "SELECT user_id, is_wishlisted FROM t ORDER BY user_id"
    )
    # Three exact duplicates collapse to one; a null wishlist flag reads as false.
    assert kept == [(1, True), (2, False), (3, False)]


@pytest.mark.parametrize(
    ("raw", "curated_table", "quarantine", "collapsed"),
    [
        (tables.RAW_APARTMENTS, tables.CURATED_LISTINGS, tables.QUARANTINE_LISTINGS, 0),
        (tables.RAW_BOOKINGS, tables.CURATED_BOOKINGS, tables.QUARANTINE_BOOKINGS, 0),
        (tables.RAW_USER_VIEWING, tables.CURATED_USER_VIEWING, tables.QUARANTINE_USER_VIEWING, 3),
    ],
)
def test_every_raw_row_is_accounted_for(
    curated: Platform, raw, curated_table, quarantine, collapsed: int
) -> None:
    def count(table: tables.Table) -> int:
        return curated.lake(table, "SELECT COUNT(*) FROM t")[0][0]

    assert count(raw) == count(curated_table) + count(quarantine) + collapsed
    assert count(raw) == {"apartments": 8, "bookings": 18, "user_viewing": 9}[raw.name]


def test_checks_report_quarantine_by_reason(curated: Platform) -> None:
    evaluations = {}
    for outcome in curated.outcomes:
        for record in curated.instance.all_logs(
            outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = record.dagster_event.event_specific_data
            evaluations[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    # Every check the tables declare was evaluated, and all but freshness (old data) passed.
    declared = {
        (asset_key(table).to_user_string(), spec.name)
        for table in tables.ALL_TABLES
        for spec in contract.checks_for(table)
    }
    assert set(evaluations) == declared
    assert {key for key, e in evaluations.items() if not e.passed} == {
        ("raw/bookings", "freshness"),
        ("raw/user_viewing", "freshness"),
    }
    accounting = evaluations[("curated/user_viewing", "rows_accounted_for")].metadata
    assert accounting["collapsed_rows"].value == 3
    # The window is its days; the rows with no day are accounted for apart.
    assert accounting["quarantined_by_reason"].value == {"apartment_id_null": 1, "user_id_null": 1}
    assert accounting["undated_quarantined_by_reason"].value == {"viewed_at_null": 1}
    share = evaluations[("curated/user_viewing", "quarantine_share_within_limit")].metadata
    assert share["quarantined_rows"].value == accounting["quarantined_rows"].value == 2
    assert ("raw/bookings", "row_count_matches_source") in evaluations
    assert ("curated/bookings", "primary_key_unique") in evaluations
