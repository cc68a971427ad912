"""The worked example of spec/kpis.md, loaded into MariaDB and materialised through the Dagster
assets: every figure it states must come out of the DuckDB warehouse exactly."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from rental_platform import tables
from rental_platform.definitions import build_definitions
from rental_platform.tables import Layer
from rental_platform_tests import worked_example as example
from rental_platform_tests.harness import Platform

START, END = date(2025, 1, 1), date(2025, 2, 28)
KPI_TABLES = tables.tables_of(Layer.PRESENTATION)


@pytest.fixture(scope="module")
def example_platform(platform: Platform) -> Platform:
    platform.load_worked_example()
    platform.run(START, END)
    return platform


def rows_of(platform: Platform, name: str) -> list[tuple]:
    table = tables.TABLES[f"presentation.{name}"]
    columns = ", ".join(f'"{c}"' for c in table.column_names)
    key = ", ".join(f'"{c}"' for c in table.key)
    return platform.warehouse(f'SELECT {columns} FROM presentation."{name}" ORDER BY {key}')


@pytest.mark.parametrize(
    "name",
    [
        "avg_listing_price",
        "occupancy_rate",
        "popular_locations",
        "top_listings",
        "bookings_per_user",
        "avg_booking_duration",
    ],
)
def test_kpi_table_is_exactly_the_worked_example(example_platform: Platform, name: str) -> None:
    assert rows_of(example_platform, name) == example.EXPECTED[name]


def test_occupancy_rates_are_the_stated_fractions(example_platform: Platform) -> None:
    rates = dict(
        example_platform.warehouse(
            "SELECT month_start, occupancy_rate FROM presentation.occupancy_rate"
        )
    )
    assert rates[date(2025, 1, 1)] == 4 / 61
    assert rates[date(2025, 2, 1)] == 1 / 56


def test_repeat_customer_rate_has_every_week_of_the_range(example_platform: Platform) -> None:
    rows = rows_of(example_platform, "repeat_customer_rate")
    assert example.REPEAT_WEEK in rows
    # Every Monday from the week of Jan 1 to the week of Feb 28: the first week (no bookings
    # in its window) is there with zero customers and a null rate.
    assert [row[0] for row in rows] == [
        date(2024, 12, 30) + i * (date(2025, 1, 6) - date(2024, 12, 30)) for i in range(9)
    ]
    assert rows[0] == (date(2024, 12, 30), 0, 0, None)


def test_no_views_means_no_engagement_rows(example_platform: Platform) -> None:
    assert rows_of(example_platform, "engagement_funnel") == []


def test_every_publish_is_logged(example_platform: Platform) -> None:
    logged = example_platform.warehouse(
        "SELECT table_name, window_start, window_end, row_count FROM presentation._publish_log"
    )
    assert ("occupancy_rate", date(2025, 1, 1), date(2025, 3, 1), 2) in logged
    assert {row[0] for row in logged} == {t.name for t in KPI_TABLES}


def test_rematerialising_changes_no_table(example_platform: Platform) -> None:
    """A second run of the same range replaces partitions: every table, lake and warehouse,
    holds exactly what it held before (extraction timestamps aside)."""

    def snapshot() -> dict[str, list[tuple]]:
        state = {t.name: rows_of(example_platform, t.name) for t in KPI_TABLES}
        for table in tables.ALL_TABLES:
            columns = ", ".join(c for c in table.column_names if c != "_extracted_at")
            state[table.id] = example_platform.lake(table, f"SELECT {columns} FROM t ORDER BY ALL")
        return state

    before = snapshot()
    example_platform.run(START, END)
    assert snapshot() == before
    assert before["curated.bookings"] and before["presentation.top_listings"]


def test_one_week_can_be_rematerialised(example_platform: Platform) -> None:
    """The weekly KPIs of one week, from the asset graph as the UI does it: they are computed
    together (the multi-asset cannot be split), and only that week's window is published."""
    defs = build_definitions(example_platform.settings)
    top_listings = dg.AssetKey(["presentation", "top_listings"])
    selection = dg.AssetSelection.assets(top_listings).required_multi_asset_neighbors()
    result = dg.materialize(
        list(defs.assets),
        selection=selection,
        partition_key="2025-01-06",
        resources=defs.resources,
        instance=example_platform.instance,
    )
    assert result.success
    weekly = {
        dg.AssetKey(["presentation", t.name])
        for t in KPI_TABLES
        if t.grain is tables.Grain.WEEKLY and t is not tables.REPEAT_CUSTOMER_RATE
    }
    assert {m.asset_key for m in result.asset_materializations_for_node("kpis_weekly")} == weekly
    logged = example_platform.warehouse(
        "SELECT table_name, window_start, window_end, row_count FROM presentation._publish_log "
        f"ORDER BY published_at DESC LIMIT {len(weekly)}"
    )
    assert ("top_listings", date(2025, 1, 6), date(2025, 1, 13), 3) in logged
    assert {(row[1], row[2]) for row in logged} == {(date(2025, 1, 6), date(2025, 1, 13))}
    assert rows_of(example_platform, "top_listings") == example.EXPECTED["top_listings"]


def test_a_later_weeks_repeat_customers_read_the_days_before_it(
    example_platform: Platform,
) -> None:
    """The week of 2025-01-27's window starts on 01-04 (its Sunday - 29 days) and holds the
    bookings made on 01-06: a run of that week alone reads the days before its Monday, and
    publishes the row the whole range did."""
    week = date(2025, 1, 27)
    before = rows_of(example_platform, "repeat_customer_rate")
    assert (week, 2, 1, 0.5) in before
    example_platform.run(week, date(2025, 2, 2))
    assert rows_of(example_platform, "repeat_customer_rate") == before
