"""Create the source tables from the contract and fill them with sample data.

MariaDB-only (10.6+, tested on 10.11): bookings and views are generated server-side from the
SEQUENCE engine (see `fill.py`). The tables are created from `source_schema.sql` verbatim; the
secondary indexes of the two large tables are dropped while loading and re-created afterwards
(one sorted build is much faster than maintaining them row by row), so the final schema is the
contract's.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import resources
from typing import Any

import pymysql

from rental_platform.seed import fill
from rental_platform.seed.generate import generate_listings, hour_picks, listing_picks
from rental_platform.seed.scales import SeedScale

SOURCE_TABLES = ("apartments", "apartment_attributes", "user_viewing", "bookings")
# Column order of the contract's tables, for statements that list them.
APARTMENT_COLUMNS = (
    "id", "title", "source", "price", "currency", "listing_created_on", "is_active",
    "last_modified_timestamp",
)  # fmt: skip
ATTRIBUTE_COLUMNS = (
    "id", "category", "body", "amenities", "bathrooms", "bedrooms", "fee", "has_photo",
    "pets_allowed", "price_display", "price_type", "square_feet", "address", "cityname", "state",
    "latitude", "longitude",
)  # fmt: skip
BOOKING_COLUMNS = (
    "booking_id", "user_id", "apartment_id", "booking_date", "checkin_date", "checkout_date",
    "total_price", "currency", "booking_status",
)  # fmt: skip
VIEW_COLUMNS = ("user_id", "apartment_id", "viewed_at", "is_wishlisted", "call_to_action")
# Tables whose secondary index is built after the load.
_DEFERRED_INDEX_TABLES = ("bookings", "user_viewing")
# Parts the browsing views are generated in (see `seed_source`): small enough that the two
# connections finish within a part's time of each other.
BROWSE_PARTS = 16
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def source_schema_sql() -> str:
    """The contract DDL, as shipped in the package."""
    return resources.files("rental_platform.seed").joinpath("source_schema.sql").read_text("utf-8")


def schema_statements(sql: str | None = None) -> dict[str, str]:
    """CREATE TABLE statement per table name, comments stripped."""
    text = "\n".join(line.split("--", 1)[0] for line in (sql or source_schema_sql()).splitlines())
    statements: dict[str, str] = {}
    for statement in text.split(";"):
        match = re.search(r"CREATE TABLE (\w+)", statement)
        if match:
            statements[match.group(1)] = statement.strip()
    return statements


def secondary_keys(statement: str) -> list[tuple[str, str]]:
    """(key name, column list) of each plain KEY in a CREATE TABLE statement."""
    return re.findall(r"^\s*KEY (\w+) \(([^)]*)\)", statement, flags=re.MULTILINE)


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """INSERT ... VALUES with one placeholder per column: the form pymysql's executemany sends
    as multi-row statements rather than one round trip per row."""
    placeholders = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO `{table}` ({', '.join(columns)}) VALUES ({placeholders})"


@contextmanager
def _connect(connect_kwargs: dict[str, Any]) -> Iterator[pymysql.connections.Connection]:
    """A connection to the server (not the database, which may not exist yet)."""
    kwargs = {key: value for key, value in connect_kwargs.items() if key != "database"}
    if kwargs.get("password") is None:
        kwargs["password"] = ""
    kwargs.setdefault("charset", "utf8mb4")
    kwargs["autocommit"] = True
    connection = pymysql.connect(**kwargs)
    try:
        yield connection
    finally:
        connection.close()


# Listings a played night holds back until a later one (seed/changes.py), in the source's
# database beside the contract's tables.
PENDING_TABLES = ("pending_apartments", "pending_apartment_attributes")


def seed_source(
    connect_kwargs: dict[str, Any],
    scale: SeedScale,
    *,
    seed: int = 42,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Drop and recreate the four source tables in database connect_kwargs['database']
    (creating the database if missing), fill them deterministically, return row counts per table.

    `log`, if given, receives one line per step with its wall time (never the password).
    """
    database = connect_kwargs.get("database")
    if not database or not _IDENTIFIER.match(str(database)):
        raise ValueError("connect_kwargs['database'] must be a plain identifier ([A-Za-z0-9_])")
    _check_scale(scale)
    statements = schema_statements()
    say = log or (lambda _message: None)

    def step(cursor: Any, label: str, sql: str) -> int:
        began = time.perf_counter()
        cursor.execute(sql)
        say(f"{label}: {time.perf_counter() - began:.1f}s")
        return int(cursor.rowcount)

    def add_keys(cursor: Any, table: str) -> None:
        keys = secondary_keys(statements[table])
        adds = ", ".join(f"ADD KEY `{key}` ({columns})" for key, columns in keys)
        step(cursor, f"index {table}", f"ALTER TABLE `{table}` {adds}")

    failed = threading.Event()

    def on_connections(*works: Callable[[Any], None]) -> None:
        """Each work on a connection of its own, all at the same time. When one fails, `failed`
        tells the others to stop at their next part."""

        def run(work: Callable[[Any], None]) -> None:
            try:
                with _connect(connect_kwargs) as connection, connection.cursor() as cursor:
                    connection.select_db(database)
                    _session(cursor)
                    work(cursor)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=len(works)) as pool:
            for future in [pool.submit(run, work) for work in works]:
                future.result()

    with _connect(connect_kwargs) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
        connection.select_db(database)
        _session(cursor)
        # The tables of listings a played night holds back (seed/changes.py) belong to the
        # data they were played on: a fresh seed starts without them.
        for table in (*SOURCE_TABLES, *PENDING_TABLES):
            cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        for table in SOURCE_TABLES:
            cursor.execute(statements[table])
            if table in _DEFERRED_INDEX_TABLES:
                for key, _columns in secondary_keys(statements[table]):
                    cursor.execute(f"ALTER TABLE `{table}` DROP KEY `{key}`")
        cursor.execute(fill.funnel_views_count_sql(scale, seed))
        funnel = int(cursor.fetchone()[0])
        if funnel > scale.views // 2:
            raise ValueError(f"scale has too few views for its bookings ({funnel} funnel views)")
    listings = generate_listings(scale, seed)

    # Two connections, each with its own temporary pick tables, load at the same time: one the
    # bookings, then the funnel views (which read them) and the bookings' index; the other the
    # browsing views. Those are generated in parts, ranges of row numbers, and whichever
    # connection is free takes the next part, so that neither core waits for the other. Each
    # row is a function of its row number, so the rows are the same on every run; their
    # physical order is not, but each part is in time order, as are the bookings (fill.py).
    browse = scale.views - funnel
    parts: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    for part in fill.row_ranges(browse, BROWSE_PARTS):
        parts.put(part)
    counts: dict[str, int] = {}
    browsed: list[tuple[int, float]] = []

    def load_browsing_views(cursor: Any, listing_slots: int, hour_slots: int) -> None:
        while not failed.is_set():
            try:
                part = parts.get_nowait()
            except queue.Empty:
                return
            began = time.perf_counter()
            cursor.execute(
                fill.browse_views_sql(scale, seed, browse, listing_slots, hour_slots, part)
            )
            browsed.append((int(cursor.rowcount), time.perf_counter() - began))

    def load_bookings_then_browsing_views(cursor: Any) -> None:
        listing_slots, hour_slots = _create_pick_tables(cursor, scale, listings)
        counts["bookings"] = step(
            cursor, "bookings", fill.bookings_sql(scale, seed, listing_slots, hour_slots)
        )
        inserted = step(cursor, "user_viewing (funnel)", fill.funnel_views_sql(scale, seed))
        if inserted != funnel:
            raise RuntimeError(f"expected {funnel} funnel views, inserted {inserted}")
        add_keys(cursor, "bookings")
        load_browsing_views(cursor, listing_slots, hour_slots)

    def load_only_browsing_views(cursor: Any) -> None:
        load_browsing_views(cursor, *_create_pick_tables(cursor, scale, listings))

    began = time.perf_counter()
    on_connections(load_bookings_then_browsing_views, load_only_browsing_views)
    say(f"user_viewing (browsing, {len(browsed)} parts): {sum(t for _, t in browsed):.1f}s")
    say(f"bookings and views on two connections: {time.perf_counter() - began:.1f}s")
    counts["user_viewing"] = funnel + sum(rows for rows, _ in browsed)

    # The listings, which nothing above reads from the server, while the views are indexed.
    def load_listings(cursor: Any) -> None:
        began = time.perf_counter()
        attributes = [item.attributes for item in listings if item.attributes is not None]
        cursor.executemany(
            insert_sql("apartments", APARTMENT_COLUMNS), [item.apartment for item in listings]
        )
        cursor.executemany(insert_sql("apartment_attributes", ATTRIBUTE_COLUMNS), attributes)
        counts.update(apartments=len(listings), apartment_attributes=len(attributes))
        say(f"apartments + apartment_attributes: {time.perf_counter() - began:.1f}s")

    on_connections(lambda cursor: add_keys(cursor, "user_viewing"), load_listings)
    return {table: counts[table] for table in SOURCE_TABLES}


# How large the session's in-memory tables may grow (the picks, and a part's row numbers).
IN_MEMORY_TABLE_BYTES = 256 * 2**20

# Below these, the guaranteed "at least one of each kind of dirt" would crowd out clean rows.
_MINIMUM = {"listings": 30, "users": 1, "bookings": 200, "views": 200, "days": 1}


def _check_scale(scale: SeedScale) -> None:
    for name, minimum in _MINIMUM.items():
        if getattr(scale, name) < minimum:
            raise ValueError(f"scale.{name} must be at least {minimum}")
    if scale.users >= 2**31 or scale.views >= 2**31 or scale.bookings >= 2**31:
        raise ValueError("scale counts must stay below 2**31")


def _session(cursor: Any) -> None:
    """Session settings only: a fast bulk load into empty tables, big enough in-memory picks
    and materialised row numbers (fill.browse_views_sql)."""
    cursor.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    cursor.execute(
        "SET SESSION max_heap_table_size = %s, tmp_table_size = %s",
        (IN_MEMORY_TABLE_BYTES, IN_MEMORY_TABLE_BYTES),
    )
    cursor.execute("SET SESSION time_zone = '+00:00'")


def _create_pick_tables(cursor: Any, scale: SeedScale, listings: list) -> tuple[int, int]:
    """Temporary slot tables that turn one uniform draw into a weighted pick (see generate.py).

    Built from a compact weight table expanded with the SEQUENCE engine, not row by row.
    Returns the number of slots in each.
    """
    picks = listing_picks(listings)
    hours = hour_picks(scale)
    cursor.execute(
        "CREATE TEMPORARY TABLE tmp_seed_listing_weight (apartment_id BIGINT NOT NULL,"
        " first_slot INT NOT NULL, slot_count INT NOT NULL, nightly DECIMAL(10,2) NOT NULL,"
        " currency CHAR(3) NOT NULL) ENGINE=MEMORY"
    )
    cursor.executemany("INSERT INTO tmp_seed_listing_weight VALUES (%s, %s, %s, %s, %s)", picks)
    cursor.execute(
        f"CREATE TEMPORARY TABLE {fill.LISTING_PICK} (slot INT NOT NULL PRIMARY KEY,"
        " apartment_id BIGINT NOT NULL, nightly DECIMAL(10,2) NOT NULL,"
        " currency CHAR(3) NOT NULL) ENGINE=MEMORY"
    )
    cursor.execute(
        f"INSERT INTO {fill.LISTING_PICK} SELECT w.first_slot + s.seq - 1, w.apartment_id,"
        f" w.nightly, w.currency FROM tmp_seed_listing_weight w"
        f" JOIN seq_1_to_{max(p[2] for p in picks)} s ON s.seq <= w.slot_count"
    )
    cursor.execute(
        "CREATE TEMPORARY TABLE tmp_seed_hour_weight (hour_index INT NOT NULL,"
        " first_slot INT NOT NULL, slot_count INT NOT NULL) ENGINE=MEMORY"
    )
    cursor.executemany("INSERT INTO tmp_seed_hour_weight VALUES (%s, %s, %s)", hours)
    start = f"'{scale.start.isoformat()} 00:00:00'"
    cursor.execute(
        f"CREATE TEMPORARY TABLE {fill.HOUR_PICK} (slot INT NOT NULL PRIMARY KEY,"
        " hour_start DATETIME NOT NULL) ENGINE=MEMORY"
    )
    cursor.execute(
        f"INSERT INTO {fill.HOUR_PICK} SELECT w.first_slot + s.seq - 1,"
        f" {start} + INTERVAL w.hour_index HOUR FROM tmp_seed_hour_weight w"
        f" JOIN seq_1_to_{max(h[2] for h in hours)} s ON s.seq <= w.slot_count"
    )
    cursor.execute("DROP TEMPORARY TABLE tmp_seed_listing_weight, tmp_seed_hour_weight")
    listing_slots = picks[-1][1] + picks[-1][2]
    hour_slots = hours[-1][1] + hours[-1][2]
    return listing_slots, hour_slots
