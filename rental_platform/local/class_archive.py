"""Build the class-data archive the local Spark JVM starts from (part `class_archive`).

A JVM trained on the lake's steps, over a small synthetic raw layer in a scratch lake, writes
the classes it loaded to the archive when it exits. It never touches the source: set-up must
work with a source user that may only read it, and must not write to a server that may be
production. (The extraction's own classes, the JDBC driver's among them, load at the first run
instead.) `make setup` runs this once per environment; without an archive the platform runs
the same, only slower to warm up.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.contract import StepRequest
from rental_platform.local.jvm import class_archive_path, tuning_conf
from rental_platform.spark.lake import Lake
from rental_platform.spark.session import LOCAL_MASTER, get_or_create_session
from rental_platform.spark.steps import run_step
from rental_platform.tables import Table

# Two weeks from a Monday: every step, the weekly and monthly KPIs included, has rows to work on.
START, DAYS = date(2024, 12, 30), 14
LISTINGS, BOOKINGS, VIEWS = 30, 400, 1_000
# The steps a JVM is trained on, in dependency order (each ignores what it does not use).
TRAINED_STEPS = ("curate_listings", "curate_daily", "kpis_weekly", "kpis_monthly")


def build_class_archive() -> Path:
    """Train a JVM and keep the archive it writes. Older archives in the folder are removed."""
    target = class_archive_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with tempfile.TemporaryDirectory(prefix="rental-class-archive-") as lake:
            spark = get_or_create_session(LOCAL_MASTER, tuning_conf(archiving_to=partial))
            _train(spark, lake)
            _exit_jvm(spark)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    for stale in target.parent.glob("spark-classes-*.jsa"):
        if stale != target:
            stale.unlink()
    return target


def _train(spark: SparkSession, lake: str) -> None:
    _synthetic_raw(spark, lake)
    request = StepRequest(
        step="",
        tables=tuple(table.id for table in tables.ALL_TABLES),
        lake_root=lake,
        window_start=START,
        window_end=START + timedelta(days=DAYS),
        first_day=START,
    )
    for step in TRAINED_STEPS:
        run_step(spark, replace(request, step=step))


def _synthetic_raw(spark: SparkSession, root: str) -> None:
    """A committed raw layer of plausible rows, made in Spark: the listings snapshot (stamped
    with the last day) and every day of bookings and views."""
    lake = Lake(spark, root)
    stamp = (START + timedelta(days=DAYS - 1)).isoformat()
    day = f"date_add(DATE'{START}', CAST(id % {DAYS} AS INT))"
    listing = f"{100_000} + id % {LISTINGS}"
    rows = {
        tables.RAW_APARTMENTS: (
            LISTINGS,
            f"{100_000} + id AS id, concat('Listing ', id) AS title, 'web' AS source, "
            "CAST(500 + id * 10 AS DECIMAL(10,2)) AS price, IF(id % 5 = 0, 'EUR', 'USD') AS "
            f"currency, CAST(date_add(DATE'{START}', CAST(id AS INT) - 100) AS TIMESTAMP) AS "
            "listing_created_on, "
            "id % 4 <> 0 AS is_active, current_timestamp() AS last_modified_timestamp",
        ),
        tables.RAW_APARTMENT_ATTRIBUTES: (
            LISTINGS,
            f"{100_000} + id AS id, IF(id % 3 = 0, 'Austin', 'Boston') AS cityname, "
            "IF(id % 3 = 0, 'TX', 'MA') AS state",
        ),
        tables.RAW_BOOKINGS: (
            BOOKINGS,
            f"id AS booking_id, id % 50 AS user_id, {listing} AS apartment_id, "
            f"CAST({day} AS TIMESTAMP) + make_interval(0, 0, 0, 0, CAST(id % 24 AS INT)) AS "
            f"booking_date, date_add({day}, CAST(id % 20 AS INT)) AS checkin_date, "
            f"date_add({day}, CAST(id % 20 + 1 + id % 6 AS INT)) AS checkout_date, "
            "CAST(100 + id AS DECIMAL(10,2)) AS total_price, 'USD' AS currency, "
            "IF(id % 7 = 0, 'cancelled', 'confirmed') AS booking_status",
        ),
        tables.RAW_USER_VIEWING: (
            VIEWS,
            f"id % 50 AS user_id, {listing} AS apartment_id, CAST({day} AS TIMESTAMP) + "
            "make_interval(0, 0, 0, 0, CAST(id % 24 AS INT)) AS viewed_at, id % 9 = 0 AS "
            "is_wishlisted, IF(id % 2 = 0, 'book_now', NULL) AS call_to_action",
        ),
    }
    for table, (count, columns) in rows.items():
        selected = f"SELECT {columns}, current_timestamp() AS _extracted_at FROM range({count})"
        df = _with_nulls(spark.sql(selected), table)
        if table.partition_column is None:
            lake.stage_snapshot(df, table)
            lake.set_table_facts(table, stamp=stamp)
        else:
            days = [START + timedelta(days=n) for n in range(DAYS)]
            lake.stage_periods(df, table, days)
            lake.stage_undated(df.limit(0), table)
    lake.commit(rows, "class archive training")


def _with_nulls(df: DataFrame, table: Table) -> DataFrame:
    """Every catalogue column, the ones the synthetic rows leave out as nulls."""
    return df.select(
        *[
            F.col(c.name) if c.name in df.columns else F.lit(None).cast(c.type).alias(c.name)
            for c in table.columns
        ]
    )


def _exit_jvm(spark: SparkSession) -> None:
    """Stop Spark and let its JVM exit by itself (it does when its stdin closes): the archive
    is written on the way out, which a killed JVM never does."""
    gateway = spark.sparkContext._gateway
    spark.stop()
    gateway.proc.stdin.close()
    gateway.proc.wait(timeout=600)
