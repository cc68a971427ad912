"""A reference implementation of spec/kpis.md in one DuckDB process, and a differential check.

`run_reference` computes every curated rule and every KPI table for the partitions a
`rental-platform run --start S --end E` materialises, with no Spark, no Dagster and no lake: it
is the yardstick the platform's speed is measured against (issue 6), and, written from the spec
alone, a second opinion on every figure the platform publishes (`compare`, `parquet_differences`,
`history_differences`).

Listing history: the reference keeps a history of its own (kpis.md, "Listing history"), a
DuckDB file with the table `history.listings_history` and the latest stamp applied to it.
`snapshot_listings` reads the source's listings now and applies them as of a stamp day;
`run_reference` only reads the history, as the spec's full recompute does ("over the source as
it is now and the listing history recorded so far"). A run of the platform over [S, E] stamps
E, so the same run of the reference is `snapshot_listings(history, source, E)` followed by
`run_reference(source, S, E, database, history)`.

Extraction: DuckDB's own `mysql` extension, LOADed from the file the
duckdb-extension-mysql-scanner wheel ships (`LOAD mysql` by name would download it), with the
source ATTACHed read-only. It reads what the platform's run reads, one SELECT per table sent
as is (mysql_query): the two snapshot tables whole, and the rows of bookings and
user_viewing whose day lies in [start, end] or is null (the extension pushes no OR ... IS NULL
filter down). The extension types every column as the contract does (DECIMAL(p,s), DATETIME as
TIMESTAMP with no zone shift, TINYINT(1) as BOOLEAN, any non-zero value true, as MySQL reads
it); each is cast to the catalogue's type all the same. Everything after that is DuckDB SQL.
DuckDB's `trim` removes spaces only, as the spec's does.

Only the layout of the tables (names, columns, types) is taken from the platform's catalogue;
none of its rules or KPI code is.

    python -m benchmarks.reference --start 2025-01-01 --end 2025-03-31 --out /tmp/ref.duckdb
"""

from __future__ import annotations

import argparse
import importlib.resources
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from rental_platform import tables
from rental_platform.resources.warehouse import create_table_sql
from rental_platform.settings import MySqlSource, Settings
from rental_platform.tables import EXTRACTED_AT, Layer, Table

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
# The wheel holding DuckDB's mysql extension, one file per DuckDB release; the name the source
# is attached as in a connection that reads it.
MYSQL_EXTENSION_PACKAGE = "duckdb_extension_mysql_scanner"
SOURCE = "src"

# The history file: every version of every listing, and the latest stamp applied (one row).
HISTORY = "history.listings_history"
LATEST_STAMP = "history.latest_stamp"
# A listing's first version is valid from the first day there is: it existed all along.
BEGINNING = date(1, 1, 1)
# What a snapshot compares with the current version: every curated column but _extracted_at
# (and id, which pairs them).
COMPARED = [c.name for c in tables.LISTING_COLUMNS if c.name != "id"]
# The columns of a listing version the KPIs read.
KPI_LISTING_COLUMNS = (
    "id",
    "is_active",
    "price",
    "currency",
    "title",
    "state",
    "cityname",
    "listing_created_on",
)
# What each fate of a listing in a snapshot does (see `snapshot_listings`).
FATES = ("new", "changed", "closed", "returned")


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


# --- reading the source ------------------------------------------------------------------------


def _sql_literal(text: str) -> str:
    """A DuckDB string literal (backslashes are plain characters in one)."""
    return "'" + text.replace("'", "''") + "'"


def _dsn_value(text: str) -> str:
    """A value of a libmysql-style connection string, double-quoted: the extension's parser
    takes \\ and \\" as escapes there, so spaces, '=' and quotes stay part of the value."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mysql_extension() -> Path:
    """The mysql extension file the duckdb-extension-mysql-scanner wheel ships for the running
    DuckDB release (an extension loads only into the release it was built for)."""
    path = (
        importlib.resources.files(MYSQL_EXTENSION_PACKAGE)
        / "extensions"
        / f"v{duckdb.__version__}"
        / "mysql_scanner.duckdb_extension"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"{MYSQL_EXTENSION_PACKAGE} holds no mysql extension for DuckDB {duckdb.__version__}: "
            f"install duckdb-extension-mysql-scanner=={duckdb.__version__}"
        )
    return Path(str(path))


@contextmanager
def _attached(connection: duckdb.DuckDBPyConnection, source: MySqlSource) -> Iterator[None]:
    """The source attached read-only as `src` for the duration. The password travels in a
    temporary (in-memory) secret, never in the connection string: DuckDB redacts a secret,
    while a failed ATTACH quotes its connection string in the error."""
    connection.execute(f"LOAD {_sql_literal(str(_mysql_extension()))}")
    dsn = " ".join(
        f"{key}={_dsn_value(value)}"
        for key, value in (
            ("host", source.host),
            ("port", str(source.port)),
            ("user", source.user),
            ("database", source.database),
        )
    )
    secret = f"{SOURCE}_password"
    connection.execute(
        f"CREATE OR REPLACE TEMPORARY SECRET {secret} "
        f"(TYPE mysql, PASSWORD {_sql_literal(source.password)})"
    )
    try:
        connection.execute(
            f"ATTACH {_sql_literal(dsn)} AS {SOURCE} (TYPE mysql, READ_ONLY, SECRET {secret})"
        )
        try:
            yield
        finally:
            connection.execute(f"DETACH {SOURCE}")
    finally:
        connection.execute(f"DROP TEMPORARY SECRET {secret}")


def _source_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.name != EXTRACTED_AT.name]


def _now() -> datetime:
    """The current UTC time as a naive timestamp, as every _extracted_at is stored."""
    return datetime.now(UTC).replace(tzinfo=None)


def _load(
    connection: duckdb.DuckDBPyConnection,
    table: Table,
    create: str,
    extracted_at: datetime,
    where: str = "",
) -> None:
    """Run `create` (e.g. `CREATE TABLE raw.bookings`) AS the source rows of a raw table (the
    source attached, see `_attached`), typed as the catalogue and stamped with `extracted_at`;
    `where` filters at the source."""
    names = _source_columns(table)
    query = f"SELECT {', '.join(f'`{n}`' for n in names)} FROM `{table.name}` {where}"
    columns = [
        f'CAST("{c.name}" AS {duckdb_type(c.type)}) AS "{c.name}"'
        for c in table.columns
        if c.name in names
    ]
    connection.execute(
        f"{create} AS SELECT {', '.join(columns)}, "
        f"TIMESTAMP '{extracted_at.isoformat(sep=' ')}' AS {EXTRACTED_AT.name} "
        f"FROM mysql_query('{SOURCE}', {_sql_literal(query)})"
    )


def extract(
    connection: duckdb.DuckDBPyConnection, source: MySqlSource, start: date, end: date
) -> None:
    """Schema `raw`: the source rows a run over [start, end] extracts, typed as the catalogue:
    the snapshot tables whole, the daily tables' rows of those days or of no day."""
    extracted_at = _now()
    after = end + timedelta(days=1)
    connection.execute("CREATE SCHEMA raw")
    with _attached(connection, source):
        for table in RAW:
            where = ""
            if day := table.partition_column:
                where = f"WHERE (`{day}` >= '{start}' AND `{day}` < '{after}') OR `{day}` IS NULL"
            _load(connection, table, f"CREATE TABLE raw.{table.name}", extracted_at, where)


# --- curated rules -----------------------------------------------------------------------------


def _select(table: Table, overrides: dict[str, str]) -> str:
    """The table's columns in catalogue order, some computed by an expression."""
    return ", ".join(
        f"{overrides[name]} AS {name}" if name in overrides else name for name in table.column_names
    )


def _not_a_currency_code(column: str) -> str:
    """True unless the value is exactly three ASCII letters A-Z after upper/trim. A full match
    (not `^...$`, whose `$` some engines let match before a trailing newline) on a character
    class of ASCII letters only; null is not a code either."""
    return f"NOT coalesce(regexp_full_match(upper(trim({column})), '[A-Z]{{3}}'), false)"


def _valid_on(version: str, day: str) -> str:
    """Whether the listing version aliased `version` is the one valid on the DATE `day`."""
    return (
        f"({version}.valid_from <= {day} AND ({version}.valid_to IS NULL "
        f"OR {day} < {version}.valid_to))"
    )


def _listing_normalisation() -> dict[str, str]:
    """Strings trimmed, currency upper-cased, is_active null read as false."""
    strings = [c.name for c in tables.CURATED_LISTINGS.columns if c.type == "string"]
    trimmed = {name: f"trim({name})" for name in strings}
    return trimmed | {
        "currency": "upper(trim(currency))",
        "is_active": "coalesce(is_active, false)",
    }


def _judge_listings(
    connection: duckdb.DuckDBPyConnection, apartments: str, attributes: str
) -> None:
    """Temp table `judged_listings`: the two source tables left-joined on id, raw values, with
    the first listing rule each row breaks (null when it breaks none). Shared by the snapshot
    (which keeps the curated rows) and the run (which keeps the quarantined ones), so both
    judge a listing alike."""
    from_attributes = {c.name for c in tables.ATTRIBUTE_COLUMNS[1:]}
    joined = ", ".join(
        f"{'t' if name in from_attributes else 'a'}.{name}"
        for name in tables.QUARANTINE_LISTINGS.column_names[:-1]
    )
    connection.execute(f"""
        CREATE OR REPLACE TEMP TABLE judged_listings AS
        SELECT {joined},
            CASE
                WHEN a.id IS NULL THEN 'id_null'
                WHEN a.price IS NULL OR a.price <= 0 THEN 'price_null_or_not_positive'
                WHEN {_not_a_currency_code("a.currency")} THEN 'currency_invalid'
                WHEN a.listing_created_on IS NULL THEN 'listing_created_on_null'
            END AS reject_reason
        FROM {apartments} a LEFT JOIN {attributes} t ON t.id = a.id
    """)


def _curate_listings(connection: duckdb.DuckDBPyConnection, history_db: Path) -> None:
    """`quarantine.listings` from this run's extraction; `curated.listings_history` copied from
    the history file; `curated.listings` = the versions valid on the latest stamp."""
    if not history_db.exists():
        raise FileNotFoundError(f"{history_db}: no listing history; take a snapshot first")
    _judge_listings(connection, "raw.apartments", "raw.apartment_attributes")
    connection.execute(f"ATTACH '{history_db}' AS kept (READ_ONLY)")
    try:
        connection.execute(f"""
            CREATE TABLE quarantine.listings AS
                SELECT {_select(tables.QUARANTINE_LISTINGS, {})} FROM judged_listings
                WHERE reject_reason IS NOT NULL;
            CREATE TABLE curated.listings_history AS
                SELECT {_select(tables.CURATED_LISTINGS_HISTORY, {})} FROM kept.{HISTORY};
            CREATE TABLE curated.listings AS
                SELECT {_select(tables.CURATED_LISTINGS, {})} FROM curated.listings_history v
                WHERE {_valid_on("v", f"(SELECT max(stamp) FROM kept.{LATEST_STAMP})")};
        """)
    finally:
        connection.execute("DETACH kept")


def _curate_bookings(connection: duckdb.DuckDBPyConnection) -> None:
    """`curated.bookings` and `quarantine.bookings`, the rules in the spec's order; a booking's
    listing must have a version valid on the day the booking was made."""
    curated_booking = _select(
        tables.CURATED_BOOKINGS,
        {
            "booking_status": "lower(trim(booking_status))",
            "currency": "upper(trim(currency))",
            "nights": "CAST(checkout_date - checkin_date AS INTEGER)",
        },
    )
    connection.execute(f"""
        CREATE TEMP TABLE judged_bookings AS
        SELECT *,
            CASE
                WHEN booking_id IS NULL THEN 'booking_id_null'
                WHEN user_id IS NULL THEN 'user_id_null'
                WHEN apartment_id IS NULL THEN 'apartment_id_null'
                WHEN booking_date IS NULL THEN 'booking_date_null'
                WHEN checkin_date IS NULL OR checkout_date IS NULL THEN 'stay_dates_null'
                WHEN checkout_date <= checkin_date THEN 'checkout_not_after_checkin'
                WHEN checkin_date < CAST(booking_date AS DATE) THEN 'checkin_before_booking'
                WHEN total_price IS NULL OR total_price < 0 THEN 'total_price_null_or_negative'
                WHEN {_not_a_currency_code("currency")} THEN 'currency_invalid'
                WHEN coalesce(lower(trim(booking_status)), '')
                    NOT IN ('confirmed', 'cancelled', 'pending') THEN 'invalid_status'
                WHEN NOT EXISTS (
                    SELECT 1 FROM curated.listings_history v
                    WHERE v.id = b.apartment_id
                        AND {_valid_on("v", "CAST(b.booking_date AS DATE)")}
                ) THEN 'unknown_apartment'
            END AS reject_reason
        FROM raw.bookings b;
        CREATE TABLE curated.bookings AS
            SELECT {curated_booking} FROM judged_bookings WHERE reject_reason IS NULL;
        CREATE TABLE quarantine.bookings AS
            SELECT {_select(tables.QUARANTINE_BOOKINGS, {})} FROM judged_bookings
            WHERE reject_reason IS NOT NULL;
    """)


def _curate_user_viewing(connection: duckdb.DuckDBPyConnection) -> None:
    """`curated.user_viewing` and `quarantine.user_viewing`. Duplicates are judged after
    normalising (a null and a false flag say the same), over all five columns with DISTINCT,
    for which nulls are equal; _extracted_at is one value per run."""
    curated_viewing = _select(
        tables.CURATED_USER_VIEWING, {"is_wishlisted": "coalesce(is_wishlisted, false)"}
    )
    connection.execute(f"""
        CREATE TEMP TABLE judged_viewing AS
        SELECT *,
            CASE
                WHEN user_id IS NULL THEN 'user_id_null'
                WHEN apartment_id IS NULL THEN 'apartment_id_null'
                WHEN viewed_at IS NULL THEN 'viewed_at_null'
            END AS reject_reason
        FROM raw.user_viewing;
        CREATE TABLE curated.user_viewing AS
            SELECT DISTINCT {curated_viewing} FROM judged_viewing WHERE reject_reason IS NULL;
        CREATE TABLE quarantine.user_viewing AS
            SELECT {_select(tables.QUARANTINE_USER_VIEWING, {})} FROM judged_viewing
            WHERE reject_reason IS NOT NULL;
    """)


def curate(connection: duckdb.DuckDBPyConnection, history_db: Path) -> None:
    """Schemas `curated` and `quarantine`: each raw row kept (normalised) or rejected with the
    first rule of kpis.md it breaks, raw values unchanged. The reasons are worded as the
    platform words them, so the two quarantines compare row for row. The source's primary key
    means a booking_id is extracted once, so there is no older extraction to supersede."""
    connection.execute("CREATE SCHEMA curated; CREATE SCHEMA quarantine")
    _curate_listings(connection, history_db)
    _curate_bookings(connection)
    _curate_user_viewing(connection)


# --- listing history ---------------------------------------------------------------------------


def _create_history(connection: duckdb.DuckDBPyConnection) -> None:
    """The history file's two tables (attached as `kept`), if it has none yet."""
    columns = ", ".join(
        f'"{c.name}" {duckdb_type(c.type)}' for c in tables.CURATED_LISTINGS_HISTORY.columns
    )
    connection.execute(f"""
        CREATE SCHEMA IF NOT EXISTS kept.history;
        CREATE TABLE IF NOT EXISTS kept.{HISTORY} ({columns});
        CREATE TABLE IF NOT EXISTS kept.{LATEST_STAMP} (stamp DATE NOT NULL);
    """)


def _curated_snapshot(connection: duckdb.DuckDBPyConnection, source: MySqlSource) -> None:
    """Temp table `snapshot`: the source's listings now, curated (quarantined rows left out)."""
    read_at = _now()
    with _attached(connection, source):
        for table in (tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES):
            _load(connection, table, f"CREATE TEMP TABLE source_{table.name}", read_at)
    _judge_listings(connection, "source_apartments", "source_apartment_attributes")
    connection.execute(f"""
        CREATE TEMP TABLE snapshot AS
            SELECT {_select(tables.CURATED_LISTINGS, _listing_normalisation())}
            FROM judged_listings WHERE reject_reason IS NULL
    """)


def _fates(connection: duckdb.DuckDBPyConnection) -> None:
    """Temp table `fates`: what the snapshot does to each listing it or the current versions
    hold. new: never curated before (first version from the beginning); returned: has a past
    but no current version (a new one from the stamp, the gap stays); changed: any curated
    column differs, nulls equal (close and start anew); closed: gone from the snapshot, or
    quarantined in it. Unchanged listings have no row."""
    differs = " OR ".join(f's."{name}" IS DISTINCT FROM c."{name}"' for name in COMPARED)
    connection.execute(f"""
        CREATE TEMP TABLE fates AS
        SELECT * FROM (
            SELECT coalesce(s.id, c.id) AS id,
                CASE
                    WHEN c.id IS NULL AND s.id NOT IN (SELECT id FROM kept.{HISTORY}) THEN 'new'
                    WHEN c.id IS NULL THEN 'returned'
                    WHEN s.id IS NULL THEN 'closed'
                    WHEN {differs} THEN 'changed'
                END AS fate
            FROM snapshot s
            FULL JOIN (SELECT * FROM kept.{HISTORY} WHERE valid_to IS NULL) c ON c.id = s.id
        )
        WHERE fate IS NOT NULL
    """)


def snapshot_listings(history_db: Path, source: MySqlSource, stamp: date) -> dict[str, int]:
    """Apply the source's listings as they are now to the history in `history_db` (created if
    missing) as of the day `stamp`; return how many listings were new, changed, closed and
    returned. History only moves forward: a stamp not later than the latest one applied
    changes nothing (all counts 0). The change is one transaction: a failure leaves the
    history as it was."""
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute(f"ATTACH '{history_db}' AS kept")
        _create_history(connection)
        (latest,) = connection.execute(f"SELECT max(stamp) FROM kept.{LATEST_STAMP}").fetchone()
        if latest is not None and stamp <= latest:
            return dict.fromkeys(FATES, 0)
        _curated_snapshot(connection, source)
        _fates(connection)
        day = f"DATE '{stamp}'"
        connection.execute(f"""
            BEGIN;
            UPDATE kept.{HISTORY} SET valid_to = {day}
                WHERE valid_to IS NULL
                    AND id IN (SELECT id FROM fates WHERE fate IN ('changed', 'closed'));
            INSERT INTO kept.{HISTORY} BY NAME
                SELECT s.*,
                    CASE f.fate WHEN 'new' THEN DATE '{BEGINNING}' ELSE {day} END AS valid_from,
                    CAST(NULL AS DATE) AS valid_to
                FROM snapshot s JOIN fates f USING (id)
                WHERE f.fate IN ('new', 'changed', 'returned');
            DELETE FROM kept.{LATEST_STAMP};
            INSERT INTO kept.{LATEST_STAMP} VALUES ({day});
            COMMIT;
        """)
        counts = dict(
            connection.execute("SELECT fate, count(*) FROM fates GROUP BY fate").fetchall()
        )
    return {fate: counts.get(fate, 0) for fate in FATES}


# --- KPIs --------------------------------------------------------------------------------------

# One query per KPI table of kpis.md, over the temp tables `weeks` and `months` (the periods,
# with their last day), `nights` (the days of the run's months), `week_versions` and
# `month_versions` (per period, the listing versions valid on its last day) and the view
# `week_bookings` (confirmed bookings with the week of their booking_date).
KPI_QUERIES = {
    # The mean exactly, in whole cents, rounded half away from zero:
    # sign(sum) * ((2 * |sum| + n) div (2 * n)).
    "avg_listing_price": """
        SELECT week_start, currency,
            CAST(CAST(sign(sum(cents)) * ((2 * abs(sum(cents)) + count(*)) // (2 * count(*)))
                AS DECIMAL(18, 0)) * 0.01 AS DECIMAL(12, 2)) AS avg_price,
            count(*) AS listing_count
        FROM (SELECT *, CAST(price * 100 AS HUGEINT) AS cents FROM week_versions)
        WHERE is_active AND CAST(date_trunc('week', listing_created_on) AS DATE) = week_start
        GROUP BY week_start, currency
    """,
    "occupancy_rate": """
        WITH active AS (
            SELECT month_start, id, CAST(listing_created_on AS DATE) AS created
            FROM month_versions WHERE is_active
        ),
        available AS (
            SELECT m.month_start,
                sum(greatest(0, m.month_end - greatest(m.month_start, a.created)))
                    AS available_nights
            FROM months m JOIN active a USING (month_start) GROUP BY m.month_start
        ),
        booked_nights AS (
            SELECT DISTINCT b.apartment_id, d.night, d.month_start
            FROM curated.bookings b
            JOIN nights d ON d.night >= b.checkin_date AND d.night < b.checkout_date
            JOIN active a ON a.id = b.apartment_id AND a.month_start = d.month_start
            WHERE b.booking_status = 'confirmed' AND d.night >= a.created
        ),
        booked AS (
            SELECT month_start, count(*) AS booked_nights FROM booked_nights GROUP BY ALL
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
    # A listing has a city only when both state and cityname are non-empty after trimming.
    "popular_locations": """
        SELECT b.week_start, v.state, v.cityname, count(*) AS booking_count,
            rank() OVER (PARTITION BY b.week_start ORDER BY count(*) DESC) AS rank
        FROM week_bookings b
        JOIN week_versions v ON v.week_start = b.week_start AND v.id = b.apartment_id
        WHERE trim(v.state) <> '' AND trim(v.cityname) <> ''
        GROUP BY b.week_start, v.state, v.cityname
    """,
    # Revenue by the booking's currency; the listing's words as its version on Sunday has them.
    "top_listings": """
        WITH ranked AS (
            SELECT week_start, currency, apartment_id,
                sum(total_price) AS revenue, count(*) AS booking_count,
                rank() OVER (PARTITION BY week_start, currency ORDER BY sum(total_price) DESC)
                    AS rank
            FROM week_bookings GROUP BY week_start, currency, apartment_id
        )
        SELECT r.*, v.title, v.state, v.cityname
        FROM ranked r
        LEFT JOIN week_versions v ON v.week_start = r.week_start AND v.id = r.apartment_id
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
                ON CAST(b.booking_date AS DATE) BETWEEN w.last_day - 29 AND w.last_day
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


def _periods(connection: duckdb.DuckDBPyConnection, start: date, end: date) -> None:
    """Temp tables of the weeks and months overlapping [start, end] (with each one's last day:
    a period sees every listing as it was then) and of every day of those months."""
    after = f"CAST(DATE '{end}' + 1 AS TIMESTAMP)"
    connection.execute(f"""
        CREATE TEMP TABLE weeks AS
            SELECT CAST(range AS DATE) AS week_start, CAST(range AS DATE) + 6 AS last_day
            FROM range(CAST(date_trunc('week', DATE '{start}') AS TIMESTAMP), {after},
                INTERVAL 7 DAY);
        CREATE TEMP TABLE months AS
            SELECT CAST(range AS DATE) AS month_start,
                CAST(range + INTERVAL 1 MONTH AS DATE) AS month_end,
                CAST(range + INTERVAL 1 MONTH AS DATE) - 1 AS last_day
            FROM range(CAST(date_trunc('month', DATE '{start}') AS TIMESTAMP), {after},
                INTERVAL 1 MONTH);
        CREATE TEMP TABLE nights AS
            SELECT d.night, m.month_start
            FROM months m, LATERAL (
                SELECT CAST(range AS DATE) AS night
                FROM range(CAST(m.month_start AS TIMESTAMP), CAST(m.month_end AS TIMESTAMP),
                    INTERVAL 1 DAY)
            ) d;
    """)


def _period_views(connection: duckdb.DuckDBPyConnection) -> None:
    """Per week and per month, the listing versions valid on its last day (the columns the
    KPIs read), and the confirmed bookings of the range's weeks."""
    columns = ", ".join(f"v.{name}" for name in KPI_LISTING_COLUMNS)
    connection.execute(f"""
        CREATE TEMP TABLE week_versions AS
            SELECT w.week_start, {columns}
            FROM weeks w JOIN curated.listings_history v ON {_valid_on("v", "w.last_day")};
        CREATE TEMP TABLE month_versions AS
            SELECT m.month_start, {columns}
            FROM months m JOIN curated.listings_history v ON {_valid_on("v", "m.last_day")};
        CREATE TEMP VIEW week_bookings AS
            SELECT * FROM (
                SELECT *, CAST(date_trunc('week', booking_date) AS DATE) AS week_start
                FROM curated.bookings WHERE booking_status = 'confirmed'
            )
            WHERE week_start IN (SELECT week_start FROM weeks);
    """)


def compute_kpis(connection: duckdb.DuckDBPyConnection, start: date, end: date) -> None:
    """Schema `presentation`: every KPI table for every week and month overlapping
    [start, end], created with the warehouse's DDL from the catalogue."""
    _periods(connection, start, end)
    _period_views(connection)
    connection.execute("CREATE SCHEMA presentation")
    for table in PRESENTATION:
        connection.execute(create_table_sql(table))
        connection.execute(
            f'INSERT INTO presentation."{table.name}" BY NAME {KPI_QUERIES[table.name]}'
        )


def run_reference(
    source: MySqlSource, start: date, end: date, database: Path, history_db: Path
) -> dict[str, float]:
    """Replace `database` with the raw, curated, quarantine and presentation tables of a run
    over [start, end] (inclusive), listings as the history in `history_db` records them (it is
    read, never changed: take the run's snapshot first); return the wall seconds of each
    stage."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    for path in (database, database.with_name(database.name + ".wal")):
        path.unlink(missing_ok=True)
    seconds: dict[str, float] = {}
    with duckdb.connect(str(database)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        for stage, run in (
            ("extract", lambda: extract(connection, source, start, end)),
            ("curate", lambda: curate(connection, history_db)),
            ("kpis", lambda: compute_kpis(connection, start, end)),
        ):
            began = time.perf_counter()
            run()
            seconds[stage] = round(time.perf_counter() - began, 3)
    return seconds


# --- comparing with the platform ---------------------------------------------------------------


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


def parquet_differences(
    platform_files: list[str], database: Path, relation: str, table: Table
) -> list[tuple]:
    """Rows of a table in only one of the platform's Parquet files and the relation (e.g.
    `curated.bookings`) of a reference DuckDB file, as ('platform' or 'reference', row), every
    column but _extracted_at compared exactly (duplicates count). Parquet values are cast to
    the catalogue's types: Spark's UTC timestamps read back as the same wall-clock time."""
    columns = [c for c in table.columns if c.name != EXTRACTED_AT.name]
    names = ", ".join(f'"{c.name}"' for c in columns)
    typed = ", ".join(f'CAST("{c.name}" AS {duckdb_type(c.type)}) AS "{c.name}"' for c in columns)
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute(f"ATTACH '{database}' AS reference (READ_ONLY)")
        ours = f"SELECT {names} FROM reference.{relation}"
        theirs = (
            f"SELECT {typed} FROM read_parquet({sorted(platform_files)!r}, union_by_name = true)"
            if platform_files
            else f"{ours} WHERE false"
        )
        return connection.execute(f"""
            SELECT 'platform', * FROM ({theirs} EXCEPT ALL {ours})
            UNION ALL
            SELECT 'reference', * FROM ({ours} EXCEPT ALL {theirs})
            ORDER BY ALL
        """).fetchall()


def history_differences(platform_files: list[str], history_db: Path) -> list[tuple]:
    """Versions in only one of the platform's listing history (its Parquet files) and the
    reference's history file, as ('platform' or 'reference', row), _extracted_at aside."""
    return parquet_differences(platform_files, history_db, HISTORY, tables.CURATED_LISTINGS_HISTORY)


def main() -> None:
    """Take a listings snapshot stamped --end into the history file, then run the reference
    against RENTAL_MYSQL_URL, as `rental-platform run` does, and print the seconds per stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, required=True)
    parser.add_argument("--end", type=date.fromisoformat, required=True)
    parser.add_argument("--out", type=Path, required=True, help="DuckDB file to (re)create")
    parser.add_argument(
        "--history",
        type=Path,
        help="listing history file, kept across runs (default: next to --out)",
    )
    args = parser.parse_args()
    history = args.history or args.out.with_name(args.out.stem + ".listing_history.duckdb")
    source = Settings.from_env().mysql
    began = time.perf_counter()
    snapshot_listings(history, source, args.end)
    seconds = {"snapshot": time.perf_counter() - began}
    seconds |= run_reference(source, args.start, args.end, args.out, history)
    print(" ".join(f"{stage}={value:.1f}s" for stage, value in seconds.items()))


if __name__ == "__main__":
    main()
