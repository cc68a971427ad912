"""A small seeded marketplace through every layer: tables non-empty and consistent."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from rental_platform import tables
from rental_platform.seed import SCALES, seed_source
from rental_platform.tables import Layer
from rental_platform_tests.conftest import Platform

SCALE = SCALES["tiny"]
CURATED_PAIRS = [
    (tables.RAW_APARTMENTS, tables.CURATED_LISTINGS, tables.QUARANTINE_LISTINGS),
    (tables.RAW_BOOKINGS, tables.CURATED_BOOKINGS, tables.QUARANTINE_BOOKINGS),
    (tables.RAW_USER_VIEWING, tables.CURATED_USER_VIEWING, tables.QUARANTINE_USER_VIEWING),
]


@pytest.fixture(scope="module")
def seeded(platform: Platform) -> Platform:
    platform.source_rows = seed_source(platform.admin.pymysql_kwargs(), SCALE, seed=7)
    # The tiny scale still has at least one row of every kind of dirt: a larger share.
    platform.settings = dataclasses.replace(platform.settings, max_quarantine_share=0.2)
    platform.outcomes = platform.run(SCALE.start, SCALE.start + timedelta(days=SCALE.days - 1))
    return platform


def count(platform: Platform, table: tables.Table, where: str = "TRUE") -> int:
    return platform.lake(table, f"SELECT COUNT(*) FROM t WHERE {where}")[0][0]


def test_raw_is_a_full_copy_of_the_source(seeded: Platform) -> None:
    for name, rows in seeded.source_rows.items():
        assert count(seeded, tables.TABLES[f"raw.{name}"]) == rows, name


@pytest.mark.parametrize(("raw", "curated", "quarantine"), CURATED_PAIRS)
def test_curation_keeps_every_row_once(seeded: Platform, raw, curated, quarantine) -> None:
    kept, rejected = count(seeded, curated), count(seeded, quarantine)
    assert kept > 0 and rejected > 0
    if raw is tables.RAW_USER_VIEWING:
        # Exact duplicates (after reading a null wishlist flag as false) collapse to one row.
        duplicates = seeded.lake(
            raw,
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM t "
            "WHERE user_id IS NOT NULL AND apartment_id IS NOT NULL AND viewed_at IS NOT NULL "
            "GROUP BY user_id, apartment_id, viewed_at, COALESCE(is_wishlisted, FALSE), "
            "call_to_action)",
        )[0][0]
        assert duplicates > 0
    else:
        duplicates = 0
    assert count(seeded, raw) == kept + rejected + duplicates


def test_every_kpi_table_is_published(seeded: Platform) -> None:
    for table in tables.tables_of(Layer.PRESENTATION):
        rows = seeded.warehouse(f'SELECT COUNT(*) FROM presentation."{table.name}"')[0][0]
        assert rows > 0, table.name


def test_kpis_agree_with_curated_bookings(seeded: Platform) -> None:
    confirmed = count(seeded, tables.CURATED_BOOKINGS, "booking_status = 'confirmed'")
    per_user = seeded.warehouse("SELECT SUM(booking_count) FROM presentation.bookings_per_user")
    durations = seeded.warehouse("SELECT SUM(booking_count) FROM presentation.avg_booking_duration")
    assert per_user[0][0] == durations[0][0] == confirmed
    rates = seeded.warehouse(
        "SELECT MIN(occupancy_rate), MAX(occupancy_rate) FROM presentation.occupancy_rate"
    )[0]
    assert 0 < rates[0] <= rates[1] <= 1
