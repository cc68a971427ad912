"""A reference implementation of spec/kpis.md in one DuckDB process, and a differential check.

`run_reference` computes every curated rule and every KPI table for the partitions a
`rental-platform run --start S --end E` materialises, with no Spark, no Dagster and no lake: it
is the yardstick the platform's speed is measured against (issue 6), and, written from the spec
alone, a second opinion on every figure the platform publishes (`compare`).

Extraction: DuckDB's `mysql` extension is downloaded at first use, which this machine cannot
do, so the source is read with pymysql: one streamed (server-side cursor) SELECT per table,
values kept as the text MySQL sends, handed to DuckDB as Arrow batches and cast to the
catalogue's types there. It reads what the platform's run reads: the two snapshot tables whole,
and the rows of bookings and user_viewing whose day lies in [start, end] or is null. Everything
after that is DuckDB SQL.

Only the layout of the tables (names, columns, types) is taken from the platform's catalogue;
none of its rules or KPI code is.

    python -m benchmarks.reference --start 2025-01-01 --end 2025-03-31 --out /tmp/ref.duckdb
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pymysql
import pymysql.converters
import pymysql.cursors

from rental_platform import tables
from rental_platform.resources.warehouse import create_table_sql
from rental_platform.settings import MySqlSource, Settings
from rental_platform.spark.layout import next_period, period_start
from rental_platform.tables import EXTRACTED_AT, Grain, Layer, Table

FETCH_ROWS = 50_000
# Relative tolerance for DOUBLE columns: the same ratio or mean computed in another order may
# differ in its last bits, never in its ninth significant digit.
DOUBLE_TOLERANCE = 1e-9
PRESENTATION = tables.tables_of(Layer.PRESENTATION)
RAW = (
    tables.RAW_APARTMENTS,
    tables.RAW_APARTMENT_ATTRIBUTES,
    tables.RAW_BOOKINGS,
    tables.RAW_USER_VIEWING,
)
# Encoders only: without decoders pymysql hands every value over as the text MySQL sent,
# several times faster than building Decimal and datetime objects that DuckDB re-parses anyway.
TEXT_ONLY = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


def duckdb_type(spark_type: str) -> str:
    """The DuckDB type of a catalogue (Spark SQL) type name."""
    if spark_type.startswith("decimal"):
        return spark_type.upper()
    return {
        "string": "VARCHAR",
        "bigint": "BIGINT",
        "int": "INTEGER",
        "double": "DOUBLE",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "boolean": "BOOLEAN",
    }[spark_type]


def _typed(name: str, spark_type: str) -> str:
    """A text column from MySQL cast to its catalogue type (TINYINT(1) booleans arrive as '0'
    or '1'; any non-zero value is true, as MySQL reads it)."""
    column = f'"{name}"'
    if spark_type == "boolean":
        return f"CAST({column} AS INTEGER) <> 0 AS {column}"
    if spark_type == "string":
        return column
    return f"CAST({column} AS {duckdb_type(spark_type)}) AS {column}"


def _source_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.name != EXTRACTED_AT.name]


def _batches(cursor: pymysql.cursors.SSCursor, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield pa.RecordBatch.from_arrays(
            [pa.array(values, pa.string()) for values in zip(*rows, strict=True)], schema=schema
        )


def extract(
    connection: duckdb.DuckDBPyConnection, source: MySqlSource, start: date, end: date
) -> None:
    """Schema `raw`: the source rows a run over [start, end] extracts, typed as the catalogue."""
    extracted_at = datetime.now(UTC).replace(tzinfo=None)
    after = end + timedelta(days=1)
    connection.execute("CREATE SCHEMA raw")
    mysql = pymysql.connect(
        **source.pymysql_kwargs(),
        charset="utf8mb4",
        conv=TEXT_ONLY,
        cursorclass=pymysql.cursors.SSCursor,
    )
    try:
        for table in RAW:
            names = _source_columns(table)
            query = f"SELECT {', '.join(f'`{n}`' for n in names)} FROM `{table.name}`"
            if day := table.partition_column:
                query += (
                    f" WHERE (`{day}` >= '{start.isoformat()}' AND `{day}` < '{after.isoformat()}')"
                    f" OR `{day}` IS NULL"
                )
            schema = pa.schema([(n, pa.string()) for n in names])
            with mysql.cursor() as cursor:
                cursor.execute(query)
                batches = pa.RecordBatchReader.from_batches(schema, _batches(cursor, schema))
                connection.register("source_rows", batches)
                columns = [_typed(c.name, c.type) for c in table.columns if c.name in names]
                connection.execute(
                    f"CREATE TABLE raw.{table.name} AS SELECT {', '.join(columns)}, "
                    f"TIMESTAMP '{extracted_at.isoformat(sep=' ')}' AS {EXTRACTED_AT.name} "
                    "FROM source_rows"
                )
                connection.unregister("source_rows")
    finally:
        mysql.close()


def _select(table: Table, overrides: dict[str, str]) -> str:
    """The table's columns in catalogue order, some computed by an expression."""
    return ", ".join(
        f"{overrides[name]} AS {name}" if name in overrides else name for name in table.column_names
    )


def _listing_normalisation() -> dict[str, str]:
    """Strings trimmed, currency upper-cased, is_active null read as false."""
    strings = [c.name for c in tables.CURATED_LISTINGS.columns if c.type == "string"]
    trimmed = {name: f"trim({name})" for name in strings}
    return trimmed | {
        "currency": "upper(trim(currency))",
        "is_active": "coalesce(is_active, false)",
    }


def curate(connection: duckdb.DuckDBPyConnection) -> None:
    """Schemas `curated` and `quarantine`: each raw row kept (normalised) or rejected with the
    first rule of kpis.md it breaks, raw values unchanged. The reasons are worded as the
    platform words them, so the two quarantines compare row for row. The source's primary key
    means a booking_id is extracted once, so there is no older extraction to supersede."""
    attributes = {c.name for c in tables.ATTRIBUTE_COLUMNS[1:]}
    joined = ", ".join(
        f"{'t' if name in attributes else 'a'}.{name}"
        for name in tables.QUARANTINE_LISTINGS.column_names[:-1]
    )
    curated_listing = _select(tables.CURATED_LISTINGS, _listing_normalisation())
    curated_booking = _select(
        tables.CURATED_BOOKINGS,
        {
            "booking_status": "lower(trim(booking_status))",
            "currency": "upper(trim(currency))",
            "nights": "CAST(checkout_date - checkin_date AS INTEGER)",
        },
    )
    curated_viewing = _select(
        tables.CURATED_USER_VIEWING, {"is_wishlisted": "coalesce(is_wishlisted, false)"}
    )
    quarantine_listing = _select(tables.QUARANTINE_LISTINGS, {})
    quarantine_booking = _select(tables.QUARANTINE_BOOKINGS, {})
    quarantine_viewing = _select(tables.QUARANTINE_USER_VIEWING, {})
    connection.execute(f"""
        CREATE SCHEMA curated;
        CREATE SCHEMA quarantine;

        CREATE TEMP TABLE judged_listings AS
        SELECT {joined},
            CASE
                WHEN a.id IS NULL THEN 'id_null'
                WHEN a.price IS NULL OR a.price <= 0 THEN 'price_null_or_not_positive'
                WHEN a.currency IS NULL OR trim(a.currency) = '' THEN 'currency_missing'
                WHEN a.listing_created_on IS NULL THEN 'listing_created_on_null'
            END AS reject_reason
        FROM raw.apartments a LEFT JOIN raw.apartment_attributes t ON t.id = a.id;
        CREATE TABLE curated.listings AS
            SELECT {curated_listing} FROM judged_listings
            WHERE reject_reason IS NULL;
        CREATE TABLE quarantine.listings AS
            SELECT {quarantine_listing} FROM judged_listings WHERE reject_reason IS NOT NULL;

        CREATE TEMP TABLE judged_bookings AS
        SELECT *,
            CASE
                WHEN booking_id IS NULL THEN 'booking_id_null'
                WHEN user_id IS NULL THEN 'user_id_null'
                WHEN apartment_id IS NULL THEN 'apartment_id_null'
                WHEN booking_date IS NULL THEN 'booking_date_null'
                WHEN checkin_date IS NULL OR checkout_date IS NULL THEN 'stay_dates_null'
                WHEN checkout_date <= checkin_date THEN 'checkout_not_after_checkin'
                WHEN total_price IS NULL OR total_price < 0 THEN 'total_price_null_or_negative'
                WHEN coalesce(lower(trim(booking_status)), '')
                    NOT IN ('confirmed', 'cancelled', 'pending') THEN 'invalid_status'
                WHEN apartment_id NOT IN (SELECT id FROM curated.listings)
                    THEN 'unknown_apartment'
            END AS reject_reason
        FROM raw.bookings;
        CREATE TABLE curated.bookings AS
            SELECT {curated_booking} FROM judged_bookings WHERE reject_reason IS NULL;
        CREATE TABLE quarantine.bookings AS
            SELECT {quarantine_booking} FROM judged_bookings WHERE reject_reason IS NOT NULL;

        CREATE TEMP TABLE judged_viewing AS
        SELECT *,
            CASE
                WHEN user_id IS NULL THEN 'user_id_null'
                WHEN apartment_id IS NULL THEN 'apartment_id_null'
                WHEN viewed_at IS NULL THEN 'viewed_at_null'
            END AS reject_reason
        FROM raw.user_viewing;
        -- Duplicates are judged after normalising: a null and a false flag say the same, and
        -- the curated key (all five columns) is unique. _extracted_at is one value per run.
        CREATE TABLE curated.user_viewing AS
            SELECT DISTINCT {curated_viewing} FROM judged_viewing WHERE reject_reason IS NULL;
        CREATE TABLE quarantine.user_viewing AS
            SELECT {quarantine_viewing} FROM judged_viewing WHERE reject_reason IS NOT NULL;
    """)


# One query per KPI table of kpis.md, over the temp tables `weeks`, `months` and `nights` (the
# periods and the days of the run's months) and the view `week_bookings` (confirmed bookings
# with the week of their booking_date).
KPI_QUERIES = {
    # Mean rounded half up to cents, exactly: in whole cents, (2 * sum + n) div (2 * n).
    "avg_listing_price": """
        SELECT week_start, currency,
            CAST(CAST((2 * sum(CAST(price * 100 AS HUGEINT)) + count(*)) // (2 * count(*))
                AS DECIMAL(18, 0)) * 0.01 AS DECIMAL(12, 2)) AS avg_price,
            count(*) AS listing_count
        FROM (
            SELECT *, CAST(date_trunc('week', listing_created_on) AS DATE) AS week_start
            FROM curated.listings WHERE is_active
        )
        WHERE week_start IN (SELECT week_start FROM weeks)
        GROUP BY week_start, currency
    """,
    "occupancy_rate": """
        WITH active AS (
            SELECT id, CAST(listing_created_on AS DATE) AS created
            FROM curated.listings WHERE is_active
        ),
        available AS (
            SELECT m.month_start,
                sum(greatest(0, m.month_end - greatest(m.month_start, a.created)))
                    AS available_nights
            FROM months m CROSS JOIN active a GROUP BY m.month_start
        ),
        booked_nights AS (
            SELECT DISTINCT b.apartment_id, d.night
            FROM curated.bookings b
            JOIN active a ON a.id = b.apartment_id
            JOIN nights d ON d.night >= b.checkin_date AND d.night < b.checkout_date
            WHERE b.booking_status = 'confirmed' AND d.night >= a.created
        ),
        booked AS (
            SELECT CAST(date_trunc('month', night) AS DATE) AS month_start,
                count(*) AS booked_nights
            FROM booked_nights GROUP BY ALL
        )
        SELECT m.month_start,
            coalesce(available_nights, 0) AS available_nights,
            coalesce(booked_nights, 0) AS booked_nights,
            CASE WHEN available_nights > 0 THEN coalesce(booked_nights, 0) / available_nights
            END AS occupancy_rate
        FROM months m
        LEFT JOIN available USING (month_start)
        LEFT JOIN booked USING (month_start)
    """,
    "popular_locations": """
        SELECT b.week_start, l.state, l.cityname, count(*) AS booking_count,
            rank() OVER (PARTITION BY b.week_start ORDER BY count(*) DESC) AS rank
        FROM week_bookings b JOIN curated.listings l ON l.id = b.apartment_id
        WHERE l.state IS NOT NULL AND l.cityname IS NOT NULL
        GROUP BY b.week_start, l.state, l.cityname
    """,
    "top_listings": """
        WITH ranked AS (
            SELECT week_start, currency, apartment_id,
                sum(total_price) AS revenue, count(*) AS booking_count,
                rank() OVER (PARTITION BY week_start, currency ORDER BY sum(total_price) DESC)
                    AS rank
            FROM week_bookings GROUP BY week_start, currency, apartment_id
        )
        SELECT r.*, l.title, l.state, l.cityname
        FROM ranked r LEFT JOIN curated.listings l ON l.id = r.apartment_id
        WHERE r.rank <= 10
    """,
    "bookings_per_user": """
        SELECT week_start, user_id, count(*) AS booking_count
        FROM week_bookings GROUP BY week_start, user_id
    """,
    # The median is the lower middle value: element (n + 1) div 2 of the sorted nights.
    "avg_booking_duration": """
        SELECT week_start, avg(nights) AS avg_nights,
            list_sort(list(nights))[(count(*) + 1) // 2] AS median_nights,
            count(*) AS booking_count
        FROM week_bookings GROUP BY week_start
    """,
    "repeat_customer_rate": """
        WITH per_user AS (
            SELECT w.week_start, b.user_id, count(*) AS bookings
            FROM weeks w JOIN curated.bookings b
                ON CAST(b.booking_date AS DATE) BETWEEN w.week_start + 6 - 29 AND w.week_start + 6
            WHERE b.booking_status = 'confirmed'
            GROUP BY w.week_start, b.user_id
        )
        SELECT w.week_start, count(p.user_id) AS customers,
            count(*) FILTER (WHERE p.bookings >= 2) AS repeat_customers,
            CASE WHEN count(p.user_id) > 0
                THEN count(*) FILTER (WHERE p.bookings >= 2) / count(p.user_id)
            END AS repeat_rate
        FROM weeks w LEFT JOIN per_user p USING (week_start)
        GROUP BY w.week_start
    """,
    "engagement_funnel": """
        WITH views AS (
            SELECT *, CAST(date_trunc('week', viewed_at) AS DATE) AS week_start
            FROM curated.user_viewing
        ),
        week_views AS (SELECT * FROM views WHERE week_start IN (SELECT week_start FROM weeks)),
        pairs AS (SELECT DISTINCT week_start, user_id, apartment_id FROM week_views),
        booked AS (SELECT DISTINCT week_start, user_id, apartment_id FROM week_bookings),
        conversion AS (
            SELECT p.week_start, count(b.user_id) / count(*) AS view_to_booking_rate
            FROM pairs p LEFT JOIN booked b USING (week_start, user_id, apartment_id)
            GROUP BY p.week_start
        )
        SELECT week_start, count(*) AS views, count(DISTINCT user_id) AS unique_viewers,
            count(*) FILTER (WHERE is_wishlisted) / count(*) AS wishlist_rate,
            any_value(view_to_booking_rate) AS view_to_booking_rate
        FROM week_views JOIN conversion USING (week_start)
        GROUP BY week_start
    """,
}


def compute_kpis(connection: duckdb.DuckDBPyConnection, start: date, end: date) -> None:
    """Schema `presentation`: every KPI table for every week and month overlapping
    [start, end], created with the warehouse's DDL from the catalogue."""
    first_week, last_week = period_start(Grain.WEEKLY, start), period_start(Grain.WEEKLY, end)
    first_month = period_start(Grain.MONTHLY, start)
    after_months = next_period(Grain.MONTHLY, period_start(Grain.MONTHLY, end))
    connection.execute(f"""
        CREATE TEMP TABLE weeks AS
            SELECT CAST(range AS DATE) AS week_start
            FROM range(DATE '{first_week}', DATE '{next_period(Grain.WEEKLY, last_week)}',
                INTERVAL 7 DAY);
        CREATE TEMP TABLE months AS
            SELECT CAST(range AS DATE) AS month_start,
                CAST(range + INTERVAL 1 MONTH AS DATE) AS month_end
            FROM range(DATE '{first_month}', DATE '{after_months}', INTERVAL 1 MONTH);
        CREATE TEMP TABLE nights AS
            SELECT CAST(range AS DATE) AS night
            FROM range(DATE '{first_month}', DATE '{after_months}', INTERVAL 1 DAY);
        CREATE TEMP VIEW week_bookings AS
            SELECT * FROM (
                SELECT *, CAST(date_trunc('week', booking_date) AS DATE) AS week_start
                FROM curated.bookings WHERE booking_status = 'confirmed'
            )
            WHERE week_start IN (SELECT week_start FROM weeks);
        CREATE SCHEMA presentation;
    """)
    for table in PRESENTATION:
        connection.execute(create_table_sql(table))
        connection.execute(
            f'INSERT INTO presentation."{table.name}" BY NAME {KPI_QUERIES[table.name]}'
        )


def run_reference(source: MySqlSource, start: date, end: date, database: Path) -> dict[str, float]:
    """Replace `database` with the raw, curated, quarantine and presentation tables of a run
    over [start, end] (inclusive); return the wall seconds of each stage."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    for path in (database, database.with_name(database.name + ".wal")):
        path.unlink(missing_ok=True)
    seconds: dict[str, float] = {}
    with duckdb.connect(str(database)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        for stage, run in (
            ("extract", lambda: extract(connection, source, start, end)),
            ("curate", lambda: curate(connection)),
            ("kpis", lambda: compute_kpis(connection, start, end)),
        ):
            began = time.perf_counter()
            run()
            seconds[stage] = round(time.perf_counter() - began, 3)
    return seconds


def _comparable(table: Table, alias: str) -> str:
    return ", ".join(f'{alias}."{c}"' for c in table.column_names)


def compare(platform_warehouse: Path, reference_warehouse: Path) -> dict[str, list[tuple]]:
    """Per presentation table, the rows found in only one of the two warehouses, each as
    ('platform' or 'reference', row).

    Rows are matched exactly (EXCEPT ALL, so duplicates count), DECIMALs included; a row left
    over on one side is then forgiven if the other side has one left over with the same
    non-DOUBLE values and every DOUBLE within a relative DOUBLE_TOLERANCE.
    """
    differences: dict[str, list[tuple]] = {}
    with duckdb.connect() as connection:
        connection.execute(f"ATTACH '{platform_warehouse}' AS platform (READ_ONLY)")
        connection.execute(f"ATTACH '{reference_warehouse}' AS reference (READ_ONLY)")
        for table in PRESENTATION:
            exact = [f'x."{c.name}" IS NOT DISTINCT FROM y."{c.name}"' for c in table.columns]
            close = [
                f'(x."{c.name}" IS NOT DISTINCT FROM y."{c.name}" OR abs(x."{c.name}" - '
                f'y."{c.name}") <= {DOUBLE_TOLERANCE} * greatest(abs(x."{c.name}"), '
                f'abs(y."{c.name}")))'
                for c in table.columns
                if c.type == "double"
            ]
            matches = " AND ".join(
                [e for e, c in zip(exact, table.columns, strict=True) if c.type != "double"] + close
            )
            differences[table.name] = []
            for side, this, other in (
                ("platform", "platform", "reference"),
                ("reference", "reference", "platform"),
            ):
                rows = connection.execute(f"""
                    WITH x AS (
                        SELECT {_comparable(table, "t")} FROM {this}.presentation."{table.name}" t
                        EXCEPT ALL
                        SELECT {_comparable(table, "t")} FROM {other}.presentation."{table.name}" t
                    ),
                    y AS (
                        SELECT {_comparable(table, "t")} FROM {other}.presentation."{table.name}" t
                        EXCEPT ALL
                        SELECT {_comparable(table, "t")} FROM {this}.presentation."{table.name}" t
                    )
                    SELECT * FROM x WHERE NOT EXISTS (SELECT 1 FROM y WHERE {matches})
                    ORDER BY ALL
                """).fetchall()
                differences[table.name] += [(side, row) for row in rows]
    return differences


def main() -> None:
    """Run the reference against RENTAL_MYSQL_URL and print the seconds per stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, required=True)
    parser.add_argument("--end", type=date.fromisoformat, required=True)
    parser.add_argument("--out", type=Path, required=True, help="DuckDB file to (re)create")
    args = parser.parse_args()
    seconds = run_reference(Settings.from_env().mysql, args.start, args.end, args.out)
    print(" ".join(f"{stage}={value:.1f}s" for stage, value in seconds.items()))


if __name__ == "__main__":
    main()
