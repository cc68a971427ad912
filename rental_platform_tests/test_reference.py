"""The reference implementation (benchmarks/reference.py) as a differential test: one DuckDB
process, written from kpis.md alone, must publish exactly what the platform publishes from the
same seeded, deliberately dirty source. The reference itself is held to the hand-computed worked
example of kpis.md, so a disagreement says which side is wrong."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pymysql
import pytest

from benchmarks.reference import (
    compare,
    duckdb_type,
    history_differences,
    parquet_differences,
    run_reference,
    snapshot_listings,
)
from rental_platform import tables
from rental_platform.seed import SeedScale, seed_source
from rental_platform.seed.load import schema_statements
from rental_platform.settings import parse_mysql_url
from rental_platform.spark.manifest import committed_files
from rental_platform.tables import Layer, Table
from rental_platform_tests import worked_example as example
from rental_platform_tests.harness import SERVER_URL, Platform

# About five weeks of a small marketplace: every kind of the seeder's dirt occurs at least once.
SCALE = SeedScale(
    listings=100, users=400, bookings=2_000, views=10_000, start=date(2025, 1, 1), days=35
)
START, END = SCALE.start, SCALE.end - timedelta(days=1)
# Edge cases this seed does not produce, added to its source rows.
TIED_STAY = ("2025-02-01", "2025-02-03", "999.00", "CHF", "confirmed")
EXTRA_BOOKINGS = [
    # booking_id, user_id, apartment_id, booking_date, checkin, checkout, total, currency, status
    # A null status is not one of confirmed, cancelled, pending: quarantined.
    (9001, 9001, 100_001, "2025-01-08 10:00", "2025-01-20", "2025-01-22", "90.00", "USD", None),
    # Two listings tied in the week of 2025-01-13 in a currency of their own: both rank 1.
    (9002, 9002, 100_001, "2025-01-15 10:00", *TIED_STAY),
    (9003, 9003, 100_003, "2025-01-16 10:00", *TIED_STAY),
]
EXTRA_VIEWS = [
    # A null and a false wishlist flag say the same: one curated view.
    (9_004, 100_001, "2025-01-09 12:00:00", None, "none"),
    (9_004, 100_001, "2025-01-09 12:00:00", 0, "none"),
]
KPI_TABLES = tables.tables_of(Layer.PRESENTATION)
# The listing history is compared with the reference's own history file instead.
CURATED_AND_QUARANTINE = tuple(
    t
    for t in tables.tables_of(Layer.CURATED) + tables.tables_of(Layer.QUARANTINE)
    if t is not tables.CURATED_LISTINGS_HISTORY
)
EXAMPLE_START, EXAMPLE_END = date(2025, 1, 1), date(2025, 2, 28)


@dataclass
class Differential:
    platform: Platform
    reference: Path
    history: Path
    differences: dict[str, list[tuple]]


@pytest.fixture(scope="module")
def differential(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Differential:
    seed_source(platform.admin.pymysql_kwargs(), SCALE, seed=11)
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", EXTRA_BOOKINGS)
    platform.execute("INSERT INTO user_viewing VALUES (%s,%s,%s,%s,%s)", EXTRA_VIEWS)
    # So few listings still get at least one of each kind of dirt: a larger share.
    platform.settings = dataclasses.replace(platform.settings, max_quarantine_share=0.2)
    platform.run(START, END)
    # The platform's run stamps its listings snapshot with its last day; so does the reference.
    folder = tmp_path_factory.mktemp("reference")
    reference, history = folder / "reference.duckdb", folder / "listing_history.duckdb"
    snapshot_listings(history, platform.settings.mysql, END)
    run_reference(platform.settings.mysql, START, END, reference, history)
    warehouse = Path(platform.settings.warehouse.database)
    return Differential(platform, reference, history, compare(warehouse, reference))


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def rows_by_key(database: Path, table: Table) -> list[tuple]:
    columns = ", ".join(f'"{c}"' for c in table.column_names)
    key = ", ".join(f'"{c}"' for c in table.key)
    return query(database, f'SELECT {columns} FROM presentation."{table.name}" ORDER BY {key}')


@pytest.mark.parametrize("table", KPI_TABLES, ids=lambda t: t.name)
def test_reference_publishes_what_the_platform_publishes(
    differential: Differential, table: Table
) -> None:
    assert differential.differences[table.name] == []


def test_every_kpi_table_has_rows_in_both(differential: Differential) -> None:
    """The seed covers every KPI: no table is equal merely because both sides are empty."""
    for table in KPI_TABLES:
        count = f'SELECT COUNT(*) FROM presentation."{table.name}"'
        (reference,) = query(differential.reference, count)[0]
        assert reference > 0, table.name
        assert differential.platform.warehouse(count) == [(reference,)], table.name


def test_the_edge_cases_are_in_the_published_rows(differential: Differential) -> None:
    top = differential.platform.warehouse(
        "SELECT apartment_id, rank FROM presentation.top_listings "
        "WHERE week_start = DATE '2025-01-13' AND currency = 'CHF'"
    )
    assert sorted(top) == [(100_001, 1), (100_003, 1)]
    (views,) = query(
        differential.reference,
        "SELECT COUNT(*) FROM curated.user_viewing WHERE user_id = 9004",
    )[0]
    assert views == 1


def test_the_seed_exercises_the_curated_rules(differential: Differential) -> None:
    reasons = {
        (layer_table, reason)
        for layer_table in ("listings", "bookings", "user_viewing")
        for (reason,) in query(
            differential.reference,
            f"SELECT DISTINCT reject_reason FROM quarantine.{layer_table}",
        )
    }
    assert {
        ("listings", "price_null_or_not_positive"),
        ("listings", "currency_invalid"),
        ("listings", "listing_created_on_null"),
        ("bookings", "user_id_null"),
        ("bookings", "apartment_id_null"),
        ("bookings", "booking_date_null"),
        ("bookings", "stay_dates_null"),
        ("bookings", "checkout_not_after_checkin"),
        ("bookings", "checkin_before_booking"),
        ("bookings", "total_price_null_or_negative"),
        ("bookings", "currency_invalid"),
        ("bookings", "invalid_status"),
        ("bookings", "unknown_apartment"),
        ("user_viewing", "user_id_null"),
        ("user_viewing", "apartment_id_null"),
        ("user_viewing", "viewed_at_null"),
    } <= reasons
    (duplicates,) = query(
        differential.reference,
        "SELECT (SELECT COUNT(*) FROM raw.user_viewing) - (SELECT COUNT(*) FROM "
        "quarantine.user_viewing) - (SELECT COUNT(*) FROM curated.user_viewing)",
    )[0]
    assert duplicates > 0


def lake_differences(platform: Platform, reference: Path, table: Table) -> list[tuple]:
    """Rows of a curated or quarantine table in only one of the platform's lake (its committed
    files) and the reference (extraction times aside), as ('platform' or 'reference', row)."""
    files = committed_files(platform.settings.lake_root, table.id)
    return parquet_differences(files, reference, f"{table.layer}.{table.name}", table)


@pytest.mark.parametrize("table", CURATED_AND_QUARANTINE, ids=lambda t: t.id)
def test_curated_layer_matches_the_platform_lake(differential: Differential, table: Table) -> None:
    assert lake_differences(differential.platform, differential.reference, table) == []


def test_listing_history_matches_the_platform_lake(differential: Differential) -> None:
    """One snapshot each, stamped END: every curated listing has one version, from 0001-01-01."""
    table = tables.CURATED_LISTINGS_HISTORY
    files = committed_files(differential.platform.settings.lake_root, table.id)
    assert files
    assert history_differences(files, differential.history) == []


# --- the worked example of kpis.md ---------------------------------------------------------


@pytest.fixture(scope="module")
def example_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The reference run over the worked example, from a database of its own."""
    name = f"rental_reference_example_{os.getpid()}"
    source = parse_mysql_url(f"{SERVER_URL}/{name}")
    server = {k: v for k, v in source.pymysql_kwargs().items() if k != "database"}
    with pymysql.connect(**server) as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        with pymysql.connect(**source.pymysql_kwargs()) as connection:
            with connection.cursor() as cursor:
                for statement in schema_statements().values():
                    cursor.execute(statement)
                cursor.executemany(
                    "INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", example.APARTMENTS
                )
                cursor.executemany(
                    "INSERT INTO apartment_attributes (id, cityname, state) VALUES (%s,%s,%s)",
                    example.APARTMENT_ATTRIBUTES,
                )
                cursor.executemany(
                    "INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", example.BOOKINGS
                )
            connection.commit()
        folder = tmp_path_factory.mktemp("example")
        database, history = folder / "reference.duckdb", folder / "listing_history.duckdb"
        snapshot_listings(history, source, EXAMPLE_END)
        run_reference(source, EXAMPLE_START, EXAMPLE_END, database, history)
        yield database
    finally:
        with pymysql.connect(**server) as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.mark.parametrize("name", sorted(example.EXPECTED))
def test_reference_reproduces_the_worked_example(example_reference: Path, name: str) -> None:
    table = tables.TABLES[f"presentation.{name}"]
    assert rows_by_key(example_reference, table) == example.EXPECTED[name]


def test_reference_repeat_customers_of_the_worked_example(example_reference: Path) -> None:
    rows = rows_by_key(example_reference, tables.REPEAT_CUSTOMER_RATE)
    assert example.REPEAT_WEEK in rows
    # A row for every week of the range, the first (no bookings in its window) empty.
    assert [row[0] for row in rows] == [date(2024, 12, 30) + timedelta(weeks=i) for i in range(9)]
    assert rows[0] == (date(2024, 12, 30), 0, 0, None)
    assert rows_by_key(example_reference, tables.ENGAGEMENT_FUNNEL) == []


def test_reference_history_of_the_worked_example(example_reference: Path) -> None:
    """One snapshot: each listing one version, valid from the beginning, current in
    curated.listings."""
    history = query(
        example_reference,
        "SELECT id, title, valid_from, valid_to FROM curated.listings_history ORDER BY id",
    )
    assert history == [(i, f"L{i}", date(1, 1, 1), None) for i in (1, 2, 3)]
    assert query(example_reference, "SELECT id FROM curated.listings ORDER BY id") == [
        (1,),
        (2,),
        (3,),
    ]


def test_reference_tables_have_the_catalogue_types(example_reference: Path) -> None:
    for table in KPI_TABLES:
        described = query(example_reference, f'DESCRIBE presentation."{table.name}"')
        assert [(row[0], row[1]) for row in described] == [
            (c.name, duckdb_type(c.type)) for c in table.columns
        ], table.name


def test_compare_forgives_last_bits_but_nothing_more(
    example_reference: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.duckdb"
    shutil.copy(example_reference, other)
    assert not any(compare(example_reference, other).values())
    with duckdb.connect(str(other)) as connection:
        connection.execute(
            "UPDATE presentation.occupancy_rate SET occupancy_rate = occupancy_rate * (1 + 1e-12)"
        )
    assert not any(compare(example_reference, other).values())
    with duckdb.connect(str(other)) as connection:
        connection.execute(
            "UPDATE presentation.occupancy_rate SET occupancy_rate = occupancy_rate * (1 + 1e-6) "
            "WHERE month_start = DATE '2025-02-01'"
        )
        connection.execute("UPDATE presentation.top_listings SET revenue = revenue + 0.01")
    differences = compare(example_reference, other)
    assert differences["occupancy_rate"] == [
        ("platform", (date(2025, 2, 1), 56, 1, 1 / 56)),
        ("reference", (date(2025, 2, 1), 56, 1, pytest.approx(1 / 56 * (1 + 1e-6)))),
    ]
    assert len(differences["top_listings"]) == 6
    assert not any(v for k, v in differences.items() if k not in ("occupancy_rate", "top_listings"))
